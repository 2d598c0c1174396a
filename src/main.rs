fn main() -> std::process::ExitCode {
    baken::cli::main()
}
