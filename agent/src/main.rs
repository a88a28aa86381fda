use std::process::ExitCode;

fn main() -> ExitCode {
    let status = palisade::cli::main();
    ExitCode::from(u8::try_from(status).unwrap_or(u8::MAX))
}
