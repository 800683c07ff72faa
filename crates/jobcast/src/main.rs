//! The `jobcast` binary: `serve` (everything in one process on the embedded store), `gateway`
//! and `worker` (the distributed deployment on Redis), `token` (mint a dev token) and `call`
//! (call a method from the command line), `jobs` (operators' view of the queue) and `bench`
//! (load generators for any server that speaks the protocol).

mod bench;
mod call;
mod distributed;
mod gateway;
mod http_client;
mod jobs;
mod serve;
mod settings;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc: measured in docs/benchmarks.md (resident memory per
/// connection and throughput), see docs/decisions.md.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jobcast: a real-time async job gateway (JSON-RPC 2.0 over WebSocket).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads of the async runtime. Default: one per core, but for `serve` and `gateway` one
    /// fewer (at least one): `serve`'s embedded store commits on a thread of its own, and a
    /// gateway's sockets keep the kernel busy on a core of their own.
    #[arg(long, global = true, env = "JOBCAST_THREADS",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Gateway + embedded durable queue + demo worker, in one process.
    Serve(serve::ServeArgs),
    /// A gateway on a shared Redis queue (run any number).
    Gateway(distributed::GatewayCmdArgs),
    /// A worker serving the demo methods from a shared Redis queue (run any number).
    Worker(distributed::WorkerArgs),
    /// Mint a development token signed with the configured secret.
    Token(settings::TokenArgs),
    /// Call a method, show its progress on stderr and print the result on stdout.
    Call(call::CallArgs),
    /// Load generators: drive any server speaking the protocol and report rates and latency.
    Bench(bench::BenchArgs),
    /// Operators: list, show, retry, cancel and purge jobs through a gateway's server API.
    Jobs(jobs::JobsArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let threads = cli.threads;
    let result = match cli.command {
        Command::Serve(a) => runtime(threads, 1)
            .and_then(|rt| rt.block_on(serve::run(a)))
            .map(|()| 0),
        Command::Gateway(a) => runtime(threads, 1)
            .and_then(|rt| rt.block_on(distributed::gateway(a)))
            .map(|()| 0),
        Command::Worker(a) => runtime(threads, 0)
            .and_then(|rt| rt.block_on(distributed::worker(a)))
            .map(|()| 0),
        Command::Token(a) => settings::token(a).map(|()| 0),
        Command::Call(a) => runtime(threads, 0).and_then(|rt| rt.block_on(call::run(a))),
        Command::Bench(a) => runtime(threads, 0).and_then(|rt| rt.block_on(bench::run(a))),
        Command::Jobs(a) => runtime(threads, 0).and_then(|rt| rt.block_on(jobs::run(a))),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The async runtime: `threads` worker threads, or one per core less `spare` (at least one).
/// `serve` spares a core for its store's writer thread, `gateway` for the kernel's socket
/// work: on this 2-core machine, one runtime thread instead of two did 16-25 % more jobs a
/// second in `serve` (fan-out latency no worse) and 3-9 % more through a gateway on Redis
/// (docs/decisions.md).
fn runtime(threads: Option<usize>, spare: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        cores.saturating_sub(spare).max(1)
    });
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?)
}
