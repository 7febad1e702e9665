//! The HTTP side of the contract: routing, validation, the `x-worker`
//! header, connection limits and graceful shutdown. Every model serves
//! through [`serve`]; only [`Model::execute`] and [`Model::stats`] differ,
//! and where the connections come from ([`Connections`]: a listener, or
//! connections another process accepted and handed over).

use std::convert::Infallible;
use std::future::Future;
use std::ops::{Deref, RangeInclusive};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::accept;
use crate::crash::CrashMode;
use crate::dataset::Dataset;
use crate::download::{self, Chunks, MB_RANGE};
use crate::job::{BoxFuture, Job, JobError, WorkerId};
use crate::kernel::{ITERS_RANGE, PARTS_RANGE};
use crate::slot::{InFlight, WorkerSlot};

/// The content type of `/stream` and `/buffer`.
const OCTETS: &str = "application/octet-stream";

/// The largest request body accepted; larger ones get 413.
pub const MAX_BODY: usize = 64 * 1024;
/// The most request headers accepted; more get hyper's 431.
pub const MAX_HEADERS: usize = 64;
/// `/io?ms=` accepts this range; it defaults to 20.
pub const IO_MS_RANGE: RangeInclusive<u64> = 0..=60_000;

/// What makes one server model different from another, seen from a handler.
pub trait Model: Send + Sync + 'static {
    /// Runs a job: inline on the event loop, or somewhere else while the loop
    /// goes on serving.
    fn execute(&self, job: Job) -> BoxFuture<Result<crate::Done, JobError>>;

    /// The `/stats` document.
    fn stats(&self) -> crate::contract::Stats;
}

/// A table of worker slots, wherever it lives: an `mmap`ed region (prefork)
/// or a plain allocation (threadpool).
pub type SlotTable = Arc<dyn Deref<Target = [WorkerSlot]> + Send + Sync>;

/// Everything a handler needs. One per event loop.
pub struct App {
    pub model: Arc<dyn Model>,
    /// The slots; `loop_slot` indexes the one this event loop counts its
    /// requests in.
    pub slots: SlotTable,
    pub loop_slot: usize,
    /// Who this event loop is, for `x-worker` on work it does itself.
    pub loop_worker: WorkerId,
    pub dataset: Option<Arc<Dataset>>,
    /// Whether `POST /crash` is enabled.
    pub allow_crash: bool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("loop_worker", &self.loop_worker)
            .field("allow_crash", &self.allow_crash)
            .finish_non_exhaustive()
    }
}

/// Connection-level settings.
#[derive(Clone, Copy, Debug)]
pub struct HttpConfig {
    /// A client must finish sending its request headers within this time, or
    /// the connection is closed: a slow client cannot hold a connection (and
    /// in a single-threaded worker, a slot of attention) forever. This also
    /// bounds how long an idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub grace: Duration,
    /// Machinery switched off, to measure its cost; normally none.
    pub without: Without,
}

/// A piece of the per-request machinery that `--without` can switch off.
/// Each is something `bare` does not do; switching one off breaks the
/// contract, which is why the flag is hidden and only the cost
/// measurement uses it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The slot's counters: `requests`, `in_flight`, `errors`.
    Stats,
    /// The `x-worker` header.
    XWorker,
    /// Routing, validation and the request body: every request gets `ok`.
    Routing,
    /// hyper's header-read timer (`--header-timeout-ms`).
    HeaderTimer,
    /// The 10 ms event-loop ticker (lag and heartbeat); a supervisor then
    /// needs `--worker-timeout-ms 0`.
    Ticker,
}

/// The pieces switched off, as flags the hot path reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Without {
    pub stats: bool,
    pub x_worker: bool,
    pub routing: bool,
    pub header_timer: bool,
    pub ticker: bool,
}

impl Without {
    pub fn new(pieces: &[Piece]) -> Without {
        let off = |piece| pieces.contains(&piece);
        Without {
            stats: off(Piece::Stats),
            x_worker: off(Piece::XWorker),
            routing: off(Piece::Routing),
            header_timer: off(Piece::HeaderTimer),
            ticker: off(Piece::Ticker),
        }
    }
}

/// How a graceful shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    All,
    /// The grace period ran out with connections still open.
    TimedOut,
}

/// Where an event loop's connections come from.
#[derive(Debug)]
pub enum Connections {
    /// A listening socket this loop accepts on itself (every model, and
    /// prefork under `--balance shared` or `reuseport`).
    Listener(TcpListener),
    /// Connections accepted by someone else and handed over: prefork's
    /// master under `--balance rr` accepts every connection and passes it
    /// to a worker, whose receiving task forwards it here. The channel
    /// closing means no more will come.
    Handed(mpsc::Receiver<std::net::TcpStream>),
}

impl From<TcpListener> for Connections {
    fn from(listener: TcpListener) -> Self {
        Connections::Listener(listener)
    }
}

impl Connections {
    /// The next connection to serve; `Ok(None)` once a handed-over stream
    /// has ended (a listener never ends).
    async fn next(&mut self) -> std::io::Result<Option<TcpStream>> {
        match self {
            Connections::Listener(listener) => listener.accept().await.map(|(s, _)| Some(s)),
            Connections::Handed(handed) => {
                let Some(stream) = handed.recv().await else {
                    return Ok(None);
                };
                // tokio requires a non-blocking socket: a blocking read
                // would stall the whole event loop. O_NONBLOCK belongs to
                // the open file description, which the sender's copy
                // shares, so this is idempotent and harmless to it.
                stream.set_nonblocking(true)?;
                TcpStream::from_std(stream).map(Some)
            }
        }
    }
}

/// Accepts and serves connections until `shutdown` resolves, then stops
/// accepting, lets in-flight requests finish within `config.grace` (idle
/// keep-alive connections are closed at once), and returns.
///
/// `connections` is a listener, or the connections handed to this loop
/// ([`Connections`]); either is served the same way and counted on the
/// loop's slot as it is taken.
pub async fn serve(
    connections: impl Into<Connections>,
    app: Arc<App>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()>,
) -> Drained {
    let mut connections = connections.into();
    // Whether more connections may come: a handed-over stream can end
    // before the shutdown signal does (its sender is gone).
    let mut open = true;
    let mut http = http1::Builder::new();
    http.max_headers(MAX_HEADERS);
    // hyper enforces the header-read timeout only when it has a timer.
    if !config.without.header_timer {
        http.timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout);
    }
    let without = config.without;
    let graceful = GracefulShutdown::new();
    // Whether this loop is in an episode of running out of descriptors.
    let mut exhaustion = accept::Exhaustion::default();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = connections.next(), if open => {
                let stream = match accepted {
                    Ok(Some(stream)) => stream,
                    Ok(None) => {
                        // Keep serving what is open until the shutdown.
                        tracing::info!("no more connections will be handed over");
                        open = false;
                        continue;
                    }
                    Err(error) if accept::is_exhaustion(&error) => {
                        // Out of descriptors: the connection stays in the
                        // backlog and the listener readable, so trying again
                        // at once would spin. The connections already held
                        // run in their own tasks and keep being served
                        // while this loop waits.
                        let delay = exhaustion.failed(&error);
                        tokio::time::sleep(delay).await;
                        continue;
                    }
                    Err(error) => {
                        // A connection reset before it was accepted, say.
                        // Back off briefly instead of spinning on the error.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                exhaustion.accepted();
                app.slots[app.loop_slot].connections.fetch_add(1, Relaxed);
                // Responses are small; do not let Nagle hold them back.
                let _ = stream.set_nodelay(true);
                let app = app.clone();
                let service = service_fn(move |req| handle(app.clone(), without, req));
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
                // Let the new connection start (read its first request, run
                // its handler) before accepting the next one. Where several
                // processes accept on one socket, a burst of connections
                // would otherwise all go to whichever loop woke first; this
                // way a loop that is busy leaves them to the idle ones.
                tokio::task::yield_now().await;
            }
            () = &mut shutdown => break,
        }
    }

    // Closing our copy of the listener stops this loop accepting. In prefork
    // the socket itself stays open in the other processes. A handed-over
    // stream's receiver closing tells its sender to stop handing over.
    drop(connections);
    let open = graceful.count();
    tracing::info!(open, "draining connections");
    match tokio::time::timeout(config.grace, graceful.shutdown()).await {
        Ok(()) => Drained::All,
        Err(_) => Drained::TimedOut,
    }
}

async fn handle(
    app: Arc<App>,
    without: Without,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let slot = &app.slots[app.loop_slot];
    let _in_flight = (!without.stats).then(|| InFlight::enter(slot));
    let reply = if without.routing {
        Reply::ok("ok\n")
    } else {
        route(&app, req).await.unwrap_or_else(|reply| reply)
    };
    let (worker, mut response) = (reply.worker.unwrap_or(app.loop_worker), reply.response);
    // Failures a job had elsewhere were counted by whoever ran it.
    if response.status().is_server_error() && worker == app.loop_worker && !without.stats {
        slot.errors.fetch_add(1, Relaxed);
    }
    if !without.x_worker {
        response
            .headers_mut()
            .insert("x-worker", worker_header(worker));
    }
    Ok(response)
}

/// `x-worker`'s value. Formatting a number into a header allocates, so
/// each slot's value is made once, the first time it is needed, and every
/// response after that takes a copy of a static one, which costs nothing.
fn worker_header(worker: WorkerId) -> HeaderValue {
    static SLOTS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    match worker {
        WorkerId::Main => HeaderValue::from_static("main"),
        WorkerId::Slot(index) => SLOTS
            .get_or_init(|| {
                (0..=crate::contract::MAX_WORKERS)
                    .map(|i| HeaderValue::from_static(i.to_string().leak()))
                    .collect()
            })
            .get(index)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from(index)),
    }
}

/// Every answer's body: whole (`Full`), or made as it is sent (`/stream`).
pub type ResponseBody = Either<Full<Bytes>, Chunks>;

/// An answer, and the worker that produced it when that is not the loop.
struct Reply {
    response: Response<ResponseBody>,
    worker: Option<WorkerId>,
}

impl Reply {
    fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Self::with_type(status, "text/plain; charset=utf-8", body.into())
    }

    /// A fixed answer, sent from static memory: no allocation per request.
    fn ok(body: &'static str) -> Self {
        Self::new(StatusCode::OK, Bytes::from_static(body.as_bytes()))
    }

    fn json(value: &impl serde::Serialize) -> Self {
        let text = serde_json::to_string(value).expect("contract types always serialize");
        Self::with_type(StatusCode::OK, "application/json", (text + "\n").into())
    }

    fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Self {
        Self::with_body(status, content_type, Either::Left(Full::new(body)))
    }

    fn with_body(status: StatusCode, content_type: &'static str, body: ResponseBody) -> Self {
        let mut response = Response::new(body);
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        Self {
            response,
            worker: None,
        }
    }
}

impl From<crate::Done> for Reply {
    fn from(done: crate::Done) -> Self {
        Self {
            worker: Some(done.worker),
            ..Self::new(StatusCode::OK, done.body)
        }
    }
}

impl From<JobError> for Reply {
    fn from(error: JobError) -> Self {
        let status = match error {
            JobError::QueueFull { .. } => StatusCode::SERVICE_UNAVAILABLE,
            JobError::Panicked { .. } | JobError::WorkerExited { .. } | JobError::Abandoned => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let mut reply = Reply::new(status, format!("{error}\n"));
        if let JobError::QueueFull { .. } = error {
            reply
                .response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        reply.worker = error.worker();
        reply
    }
}

/// Answers a request. Both arms of the result are answers; `Err` only lets
/// validation use `?`.
async fn route(app: &App, req: Request<Incoming>) -> Result<Reply, Reply> {
    let (parts, body) = req.into_parts();
    read_body(parts.headers.get(CONTENT_LENGTH), body).await?;
    let query = parts.uri.query();

    let method = match parts.uri.path() {
        "/" | "/health" | "/cpu" | "/io" | "/data" | "/stats" | "/stream" | "/buffer" => {
            Method::GET
        }
        "/crash" => Method::POST,
        _ => return Err(Reply::new(StatusCode::NOT_FOUND, "not found\n")),
    };
    if parts.method != method {
        let mut reply = Reply::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} only accepts {method}\n", parts.uri.path()),
        );
        let allow = HeaderValue::from_str(method.as_str()).expect("method names are ASCII");
        reply.response.headers_mut().insert(ALLOW, allow);
        return Err(reply);
    }

    match parts.uri.path() {
        "/" | "/health" => Ok(Reply::ok("ok\n")),
        "/cpu" => {
            let wide = |r: &RangeInclusive<u32>| *r.start() as u64..=*r.end() as u64;
            let iters = number_param(query, "iters", wide(&ITERS_RANGE), Some(5000))
                .map_err(bad_request)? as u32;
            let parts = number_param(query, "parts", wide(&PARTS_RANGE), Some(1))
                .map_err(bad_request)? as u32;
            if iters as u64 * parts as u64 > *ITERS_RANGE.end() as u64 {
                return Err(bad_request(format!(
                    "parameters `iters` × `parts` must be at most {}: \
                     {iters} × {parts} is over\n",
                    ITERS_RANGE.end()
                )));
            }
            Ok(app.model.execute(Job::cpu(iters, parts)).await?.into())
        }
        "/io" => {
            let ms = number_param(query, "ms", IO_MS_RANGE, Some(20)).map_err(bad_request)?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(Reply::ok("io\n"))
        }
        "/data" => {
            let Some(dataset) = app.dataset.as_ref().filter(|d| d.windows() > 0) else {
                return Err(Reply::new(
                    StatusCode::NOT_FOUND,
                    "no dataset: start the server with --dataset-mb\n",
                ));
            };
            let key = number_param(query, "key", 0..=u64::MAX, None).map_err(bad_request)?;
            let sum = dataset.checksum(key).expect("dataset is not empty");
            Ok(Reply::new(StatusCode::OK, sum + "\n"))
        }
        "/stream" | "/buffer" => {
            let mb = number_param(query, "mb", MB_RANGE, Some(1)).map_err(bad_request)? as usize;
            let body = match parts.uri.path() {
                "/stream" => Either::Right(Chunks::new(mb)),
                _ => Either::Left(Full::new(download::buffer(mb))),
            };
            Ok(Reply::with_body(StatusCode::OK, OCTETS, body))
        }
        "/stats" => {
            let mut stats = app.model.stats();
            crate::procself::fill(&mut stats);
            Ok(Reply::json(&stats))
        }
        "/crash" => {
            if !app.allow_crash {
                return Err(Reply::new(
                    StatusCode::FORBIDDEN,
                    "/crash is disabled: start the server with --allow-crash\n",
                ));
            }
            let how = param(query, "how")
                .and_then(|how| how.parse::<CrashMode>().ok())
                .ok_or_else(|| {
                    bad_request(format!(
                        "parameter `how` must be one of {}\n",
                        CrashMode::NAMES
                    ))
                })?;
            Ok(app.model.execute(Job::Crash(how)).await?.into())
        }
        _ => unreachable!("every path was matched above"),
    }
}

/// Reads (and discards) the request body, refusing more than [`MAX_BODY`].
async fn read_body(length: Option<&HeaderValue>, body: Incoming) -> Result<(), Reply> {
    let too_large = || Reply::new(StatusCode::PAYLOAD_TOO_LARGE, "request body over 64 KiB\n");
    let declared = length
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    // The common case, a GET with no body, costs nothing more.
    if body.is_end_stream() {
        return Ok(());
    }
    // A chunked body has no declared length, so count as it arrives.
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(_) => Ok(()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(Reply::new(
            StatusCode::BAD_REQUEST,
            "could not read the request body\n",
        )),
    }
}

/// The first value of query parameter `name`, if present.
fn param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Parses an integer query parameter in `range`. `default` is used when the
/// parameter is absent; without one the parameter is required. The error is
/// the one-line message a 400 carries.
fn number_param(
    query: Option<&str>,
    name: &str,
    range: RangeInclusive<u64>,
    default: Option<u64>,
) -> Result<u64, String> {
    let problem = match (param(query, name), default) {
        (None, Some(default)) => return Ok(default),
        (None, None) => "is missing",
        (Some(raw), _) => match raw.parse::<u64>() {
            Ok(value) if range.contains(&value) => return Ok(value),
            Ok(_) => "is out of range",
            Err(_) => "is not a number",
        },
    };
    Err(format!(
        "parameter `{name}` {problem}: expected an integer in {}..={}\n",
        range.start(),
        range.end()
    ))
}

fn bad_request(message: String) -> Reply {
    Reply::new(StatusCode::BAD_REQUEST, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_switches_off_exactly_the_pieces_named() {
        assert_eq!(Without::new(&[]), Without::default());
        let off = Without::new(&[Piece::XWorker, Piece::Ticker]);
        assert!(off.x_worker && off.ticker);
        assert!(!off.stats && !off.routing && !off.header_timer);
    }

    #[test]
    fn worker_headers_name_the_slot_or_main() {
        assert_eq!(worker_header(WorkerId::Main), "main");
        assert_eq!(worker_header(WorkerId::Slot(0)), "0");
        assert_eq!(worker_header(WorkerId::Slot(1024)), "1024");
        assert_eq!(worker_header(WorkerId::Slot(5000)), "5000");
    }

    #[test]
    fn params_take_the_first_match_and_tolerate_bare_keys() {
        assert_eq!(param(Some("a=1&b=2&a=3"), "a"), Some("1"));
        assert_eq!(param(Some("flag&b=2"), "flag"), Some(""));
        assert_eq!(param(Some("b=2"), "a"), None);
        assert_eq!(param(None, "a"), None);
    }

    #[test]
    fn number_params_validate_presence_type_and_range() {
        assert_eq!(number_param(None, "n", 1..=9, Some(5)), Ok(5));
        assert_eq!(number_param(Some("n=9"), "n", 1..=9, None), Ok(9));
        let message = |q| number_param(q, "n", 1..=9, None).unwrap_err();
        assert_eq!(
            message(None),
            "parameter `n` is missing: expected an integer in 1..=9\n"
        );
        assert!(message(Some("n=x")).contains("is not a number"));
        assert!(message(Some("n=-1")).contains("is not a number"));
        assert!(message(Some("n=0")).contains("is out of range"));
        assert!(message(Some("n=10")).contains("is out of range"));
    }
}
