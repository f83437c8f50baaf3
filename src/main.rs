use std::process::ExitCode;

#[actix_web::main]
async fn main() -> ExitCode {
    return_large_blocks_to_the_os();
    match orderflow::cli::run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orderflow: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Password hashing takes a 19 MiB block per hash, on whichever blocking
/// thread runs it. glibc raises its mmap threshold after the first such
/// block is freed, so later ones come from per-thread arenas and stay there:
/// 64 registrations left the engine at 862 MiB RSS. A fixed threshold of
/// 1 MiB keeps every large block mmapped and returned on free (29 MiB
/// after the same registrations; docs/benchmarks.md).
fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
