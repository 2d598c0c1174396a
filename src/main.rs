//! The `baken` binary: the command line is an adapter over the library and lives here only
//! (nothing in the library may import it).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
