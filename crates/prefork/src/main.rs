fn main() -> std::process::ExitCode {
    service::cli::server_main("prefork", prefork::run)
}
