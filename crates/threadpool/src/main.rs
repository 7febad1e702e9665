fn main() -> std::process::ExitCode {
    service::cli::server_main("threadpool", threadpool::run)
}
