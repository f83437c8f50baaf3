use std::process::ExitCode;

#[actix_web::main]
async fn main() -> ExitCode {
    orderflow::startup::return_large_blocks_to_the_os();
    match orderflow::cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}
