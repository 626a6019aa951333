//! The `herald` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = herald::cli::parse();
    match herald::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line the operator can act on, with its cause chain.
            eprintln!("herald: {error:#}");
            ExitCode::FAILURE
        }
    }
}
