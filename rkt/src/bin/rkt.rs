//! The `rkt` command: parses the command line, sets up logging and calls the library.

use clap::Parser;

fn main() {
    let cli = rkt::cli::Cli::parse();
    let filter = if cli.debug { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let verb = cli.command.verb();
    let code = match rkt::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The library's messages already include their causes.
            eprintln!("{verb}: {e}");
            254
        }
    };
    std::process::exit(code);
}
