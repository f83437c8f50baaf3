use std::process::ExitCode;

#[actix_web::main]
async fn main() -> ExitCode {
    match orderflow::cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}
