//! The command line: one subcommand per scenario or built-in service.
//!
//! Why it exists: the flags are the harness's user interface (and, for worker
//! processes, its internal protocol: hidden `--worker-*` flags), so they live in one
//! place that `--help` documents. Options shared by every client scenario (where the
//! gateway is, how to authenticate, how to split over processes) are flattened groups.

use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};

/// Load-testing harness for the ringgate WebSocket gateway (Bannou Connect v1).
#[derive(Debug, Parser)]
#[command(
    name = "ringgate-bench",
    version,
    about,
    args_conflicts_with_subcommands = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Two `rpc` reports (JSON) side by side with B/A ratios: the same as the `compare`
    /// subcommand.
    #[arg(long, num_args = 2, value_names = ["A.json", "B.json"])]
    pub compare: Option<Vec<PathBuf>>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// The command to run: a subcommand, or `compare` when given as `--compare A B`.
    pub fn into_command(self) -> Command {
        match (self.command, self.compare) {
            (Some(c), _) => c,
            (None, Some(mut ab)) => {
                let b = ab.pop().expect("clap takes exactly two values");
                let a = ab.pop().expect("clap takes exactly two values");
                Command::Compare(CompareArgs { a, b })
            }
            (None, None) => unreachable!("clap shows the help when nothing is given"),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in HTTP/1.1 keep-alive echo service (the gateway's default backend),
    /// and with `--link-listen` the same echo over the backend link.
    EchoBackend(EchoArgs),
    /// Hold N authenticated idle connections; report the gateway's RSS and CPU per
    /// connection.
    Idle(IdleArgs),
    /// N connections (token, upgrade, manifest) as fast as possible or at a set rate:
    /// handshake + manifest latency percentiles, failures by cause.
    Connect(ConnectArgs),
    /// Run a plain WebSocket echo server (the "no gateway" baseline; no auth, any path).
    WsEcho(WsEchoArgs),
    /// Run the limit probe's server: raw TCP echo of length-prefixed messages (and, to a
    /// connection that opens with a WebSocket upgrade, the least a WebSocket echo does).
    ProbeServer(ProbeServerArgs),
    /// Load the limit probe's server: ping-pong at a fixed rate or at saturation.
    Probe(ProbeArgs),
    /// Start an NPC world and a gateway in front of it, run a few thousand observers
    /// (`observers`) for ~10 s, print the report, stop both (`--rpc`: the echo backend
    /// and an RPC load instead).
    Demo(DemoArgs),
    /// Run the NPC world: a link backend whose K NPCs publish their state every
    /// 100–500 ms to topics `npc.{id}`; `/npc/watch` subscribes a session to some.
    NpcWorld(NpcWorldArgs),
    /// NPC observers: N clients each watching S NPCs of a world (`/npc/watch`), reading
    /// the pushes: decision-to-receipt latency, deliveries/s, conflations, disconnects.
    Observers(Box<ObserversArgs>),
    /// RPC load: C connections calling an endpoint at a constant total rate (open loop,
    /// latency from the intended send time) or at saturation (`--rate max`).
    Rpc(Box<RpcArgs>),
    /// Fan-out: N subscribers on one topic of a target (ringgate, NATS, Socket.IO,
    /// Pushpin or the raw limit probe), the publish rate stepped up until it falls behind.
    Fanout(Box<FanoutArgs>),
    /// The fan-out limit probe's server: writes every published message to every
    /// subscriber socket (plain TCP, length-prefixed), batched per socket.
    FanoutRawServer(FanoutRawServerArgs),
    /// Two `rpc` reports (JSON) side by side, with B/A ratios.
    Compare(CompareArgs),
    /// Draw the latency-percentile chart (SVG) of one or more `rpc` reports.
    Chart(ChartArgs),
    /// Run the gateway itself (the `ringgate` library, as the `ringgate` binary runs it)
    /// until SIGTERM/SIGINT: on its embedded defaults, or `--config FILE`. The demo uses
    /// it when no `ringgate` binary has been built.
    Gateway(ServeGatewayArgs),
}

#[derive(Debug, Args)]
pub struct ServeGatewayArgs {
    /// Gateway config file (default: the embedded defaults).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EchoArgs {
    /// Address to listen on (one SO_REUSEPORT socket per thread).
    #[arg(long, default_value = "127.0.0.1:5001")]
    pub listen: String,
    /// Also serve the backend link (docs/LINK.md) here: a WebSocket server (any path)
    /// that requires the subprotocol ringgate-link.v1 and answers every REQUEST with a
    /// REPLY (status 200) carrying the request's payload. For a service configured with
    /// `link = "ws://ADDR/link"`.
    #[arg(long, value_name = "ADDR")]
    pub link_listen: Option<String>,
    /// Threads (one monoio runtime each) per listener; default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Where the gateway is and how to authenticate to it.
#[derive(Debug, Clone, Args)]
pub struct GatewayArgs {
    /// Gateway address: `host:port`, `ws://host:port/path` or `wss://host:port/path` (default: the config's
    /// `server.listen` and `server.path`, else 127.0.0.1:8080/connect).
    #[arg(long, value_name = "ADDR|URL")]
    pub gateway: Option<String>,
    /// The gateway's config file: its HS256 secret, listen address and upgrade path are
    /// read from it (RINGGATE_* environment overrides apply, as for the gateway).
    #[arg(long, value_name = "FILE")]
    pub gateway_config: Option<PathBuf>,
    /// HS256 secret to sign tokens with (overrides the config's `auth.hs256_secret`;
    /// the variable is not RINGGATE_* because the gateway config loader owns that prefix).
    #[arg(long, env = "RG_BENCH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// CA certificates (PEM) a `wss://` gateway's certificate is verified against
    /// (default: the system's roots).
    #[arg(long, env = "RG_BENCH_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// How many worker processes to spread connections over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Procs {
    /// Enough for the descriptor and port limits (see `spawn::plan`).
    Auto,
    Fixed(usize),
}

impl FromStr for Procs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(Procs::Auto);
        }
        match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(Procs::Fixed(n)),
            _ => Err(format!("expected `auto` or a positive number, got `{s}`")),
        }
    }
}

/// Hidden flags a parent passes to the worker processes it spawns.
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// This process is worker number I (source address 127.0.0.(2+I)).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    /// Global index of this worker's first connection (names users uniquely).
    #[arg(long, hide = true, default_value_t = 0)]
    pub worker_first: usize,
    /// Run id shared by all workers of one run (makes session ids unique).
    #[arg(long, hide = true, default_value = "")]
    pub run_id: String,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to open and hold.
    #[arg(long)]
    pub conns: usize,
    /// Seconds to hold them idle once all are connected.
    #[arg(long, default_value_t = 10)]
    pub hold: u64,
    /// Worker processes (`auto`: enough for RLIMIT_NOFILE and the ephemeral ports;
    /// each binds its sockets to its own source address 127.0.0.(2+i)).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// The gateway's pid: sample its RSS and CPU before, during and after.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Connection attempts in flight per worker process during the ramp.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Time allowed for TCP connect + upgrade + manifest, per attempt.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Seconds to let the gateway settle after the last connection before sampling RSS.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// A load rate: messages (or attempts) per second, or `max` (saturation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadRate {
    Max,
    PerSec(f64),
}

impl FromStr for LoadRate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "max" {
            return Ok(LoadRate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(LoadRate::PerSec(r)),
            _ => Err(format!("expected `max` or a positive rate, got `{s}`")),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Connections to open.
    #[arg(long)]
    pub conns: usize,
    /// Attempts per second over all workers (default: as fast as possible, with
    /// `--concurrency` attempts in flight per worker).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Worker processes (`auto`: enough for RLIMIT_NOFILE and the ephemeral ports;
    /// each binds its sockets to its own source address 127.0.0.(2+i)).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Connection attempts in flight per worker process (without `--rate`).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Time allowed for TCP connect + upgrade + manifest, per attempt.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Args)]
pub struct WsEchoArgs {
    /// Address to listen on (one SO_REUSEPORT socket per thread).
    #[arg(long, default_value = "127.0.0.1:5002")]
    pub listen: String,
    /// Threads (one monoio runtime each); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ProbeServerArgs {
    /// Address to listen on (one SO_REUSEPORT socket per thread).
    #[arg(long, default_value = "127.0.0.1:5003")]
    pub listen: String,
    /// Threads (one monoio runtime each); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The probe server's address.
    #[arg(long, default_value = "127.0.0.1:5003")]
    pub server: String,
    /// Connections.
    #[arg(long, default_value_t = 100)]
    pub conns: usize,
    /// Messages per second over all connections (open loop), or `max`.
    #[arg(long, default_value = "max")]
    pub rate: LoadRate,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measured window (not recorded).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Payload bytes of the Bannou request each message stands for (the message is as
    /// long as that request's WebSocket frame).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages in flight per connection with `--rate max` (as `rpc --window`).
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Threads (one monoio runtime each); default: one per core.
    #[arg(long)]
    pub threads: Option<usize>,
    /// After the run, a message not echoed within this long counts as a timeout.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// One write per message instead of one write for all the messages due (or freed)
    /// at once: the limit for a client that sends one frame per syscall.
    #[arg(long)]
    pub write_per_message: bool,
    /// Speak WebSocket to a WebSocket echo server (`probe-server` itself, or `ws-echo`)
    /// instead of the raw probe protocol: the upgrade, then the frames `rpc --mode echo`
    /// sends (masked, 31-byte request header, ids matched from the echoes), with the
    /// probe's I/O: what a minimal client reaches, the yardstick for `rpc`'s client.
    #[arg(long)]
    pub ws: bool,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The RPC demo instead: the echo backend behind the gateway, `rpc` load on `/echo`.
    #[arg(long)]
    pub rpc: bool,
    /// Seconds measured (default: 10 for the NPC world, 20 for `--rpc`).
    #[arg(long)]
    pub duration: Option<u64>,
    /// Simulated clients: observers (default 2000) or, with `--rpc`, RPC clients (2000).
    #[arg(long, default_value_t = 2000)]
    pub conns: usize,
    /// With `--rpc`: requests per second over all clients (`max`: saturation).
    #[arg(long, default_value = "10000")]
    pub rate: String,
    /// The gateway binary (default: `ringgate` next to this binary if built, else this
    /// binary's `gateway` subcommand).
    #[arg(long, value_name = "FILE")]
    pub gateway_bin: Option<PathBuf>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct NpcWorldArgs {
    /// Address to listen on (one thread serves every link connection).
    #[arg(long, default_value = "127.0.0.1:5005")]
    pub listen: String,
    /// NPCs in the world (ids 0..K).
    #[arg(long, default_value_t = 1000)]
    pub npcs: u32,
    /// How often the one ticker makes the NPCs due decide, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub tick_ms: u64,
    /// Seed of the world's random choices (decision intervals, made-up states).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Clone, Args)]
pub struct ObserversArgs {
    /// Observers (simulated clients).
    #[arg(long, default_value_t = 2000)]
    pub observers: usize,
    /// NPCs each observer watches (chosen at random from the world's).
    #[arg(long, default_value_t = 20)]
    pub watch: usize,
    /// NPCs in the world (the one started here; else the running world's K).
    #[arg(long, default_value_t = 1000)]
    pub npcs: u32,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of pushes read before the measured window (not recorded).
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Share of the observers (0–1) that read at a tenth of the speed the pushes come
    /// at (one message, then a pause); their latencies are reported apart.
    #[arg(long, default_value_t = 0.0)]
    pub slow_share: f64,
    /// Worker processes, one thread each (`auto`: one per core, or more if RLIMIT_NOFILE
    /// and the ephemeral ports need them; each binds its sockets to its own source
    /// address 127.0.0.(2+i)).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    /// An npc-world already running (`host:port`); the gateway must link to it. Default:
    /// start one in this process on `--world-listen`.
    #[arg(long, value_name = "ADDR")]
    pub world: Option<String>,
    /// Where the world started here listens (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub world_listen: String,
    /// A running gateway (`--gateway` or `--gateway-config`; its config must route
    /// `/npc/watch` to the world's link). Default: start one with a config written for
    /// the run (`--listen`, `--admin-listen`, `--shards`, the secret, the world's link).
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Where the gateway started here listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Where the gateway started here serves /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub admin_listen: String,
    /// Shards of the gateway started here (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
    /// The gateway binary to start (default: `ringgate` beside this binary if built,
    /// else this binary's `gateway` subcommand).
    #[arg(long, value_name = "PATH")]
    pub gateway_bin: Option<PathBuf>,
    /// Where the started gateway's output goes (default: this terminal's stderr).
    #[arg(long, value_name = "FILE")]
    pub gateway_log: Option<PathBuf>,
    /// Sample this (already running) gateway's CPU and RSS.
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// A name for this run in the report and chart.
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the latency-percentile chart (SVG; fast and slow observers) here.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Write one JSON object a second here as the run goes (JSON lines, each flushed):
    /// `t_secs`, `unix_ms`, `phase` (`warmup`, `measured`, `after`), the `live` counters
    /// since the start, and the second's `fast` and `slow` latency histograms. For long
    /// runs read per interval (perf/soak.sh).
    #[arg(long, value_name = "FILE")]
    pub progress_json: Option<PathBuf>,
    /// Connection attempts in flight per worker process during the ramp.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Time allowed for TCP connect + upgrade + manifest, and for the watch's answer.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// What `rpc` speaks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RpcMode {
    /// Bannou Connect v1: manifest, the endpoint's GUID, responses by message id.
    Bannou,
    /// A plain WebSocket echo server: no manifest; the same 31-byte-header messages come
    /// back as sent and are matched by their message id.
    Echo,
}

#[derive(Debug, Clone, Args)]
pub struct RpcArgs {
    /// Connections (simulated clients).
    #[arg(long)]
    pub conns: usize,
    /// Requests per second over all connections (open loop), or `max` (closed loop with
    /// `--window` requests in flight per connection).
    #[arg(long)]
    pub rate: LoadRate,
    /// Seconds of measured load.
    #[arg(long)]
    pub duration: f64,
    /// Seconds of load before the measured window (not recorded).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Request payload bytes (a JSON object of exactly this length when >= 8).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// The endpoint to call (mode bannou).
    #[arg(long, default_value = "/echo")]
    pub endpoint: String,
    #[arg(long, value_enum, default_value_t = RpcMode::Bannou)]
    pub mode: RpcMode,
    /// Requests in flight per connection with `--rate max`.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Worker processes (`auto`: enough for RLIMIT_NOFILE and the ephemeral ports).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    /// Threads (monoio runtimes) per worker process; default: cores / processes.
    #[arg(long)]
    pub threads: Option<usize>,
    /// A request without a response after this long counts as a timeout.
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// Start this gateway config with the gateway binary for the run (its `/readyz` is
    /// awaited, its CPU and RSS sampled, SIGTERM at the end).
    #[arg(long, value_name = "CONFIG")]
    pub spawn_gateway: Option<PathBuf>,
    /// The gateway binary for `--spawn-gateway` (default: `ringgate` beside this binary
    /// if built, else this binary's `gateway` subcommand, the same library).
    #[arg(long, value_name = "PATH", requires = "spawn_gateway")]
    pub gateway_bin: Option<PathBuf>,
    /// Where the spawned gateway's output goes (default: this terminal's stderr).
    #[arg(long, value_name = "FILE", requires = "spawn_gateway")]
    pub gateway_log: Option<PathBuf>,
    /// Sample this (already running) gateway's CPU and RSS.
    #[arg(long, conflicts_with = "spawn_gateway")]
    pub gateway_pid: Option<u32>,
    /// A name for this run in charts and `compare` (default: mode and target).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log (one histogram a second) here.
    #[arg(long, value_name = "FILE")]
    pub hist_log: Option<PathBuf>,
    /// Write one JSON object a second here as the run goes (JSON lines, each flushed):
    /// `t_secs`, `unix_ms`, `phase` (`warmup`, `measured`, `after`), the `live` counters
    /// since the start, and the second's `latency` histogram (ok responses, from the
    /// intended send time). For long runs read per interval (perf/soak.sh).
    #[arg(long, value_name = "FILE")]
    pub progress_json: Option<PathBuf>,
    /// Write the latency-percentile chart (SVG) here.
    #[arg(long, value_name = "FILE.svg")]
    pub chart: Option<PathBuf>,
    /// Connection attempts in flight per worker process during the ramp.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Time allowed for TCP connect + upgrade + manifest, per attempt.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// Connections in the whole run (set by the parent for its workers).
    #[arg(long, hide = true)]
    pub total_conns: Option<usize>,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

/// What `fanout` subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FanoutTarget {
    /// NATS: its WebSocket listener (`--server`), publishing over its TCP port.
    Nats,
    /// The Socket.IO v4 script (perf/fanout_socketio.js), websocket transport only.
    Socketio,
    /// Pushpin: WebSocket-over-HTTP with a GRIP backend; publishing to its HTTP API.
    Pushpin,
    /// The limit probe (`fanout-raw-server`): plain TCP, length-prefixed messages.
    Raw,
    /// ringgate: Bannou clients calling a topic endpoint; publishing to the admin API.
    Ringgate,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[arg(long, value_enum)]
    pub target: FanoutTarget,
    /// Subscribers (split over worker processes and source addresses).
    #[arg(long, default_value_t = 10_000)]
    pub subs: usize,
    /// Where subscribers connect (`host:port[/path]`; not for ringgate, which takes
    /// `--gateway`/`--gateway-config`).
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
    /// Where to publish: NATS's or the raw probe's TCP `host:port`, or the HTTP publish
    /// URL (Pushpin `http://h:p/publish/`, Socket.IO script `http://h:p/publish`,
    /// ringgate's admin `http://h:p/v1/publish/batch`).
    #[arg(long, value_name = "ADDR|URL")]
    pub publish: String,
    /// Bearer token for the publish API (ringgate's `[admin] token`).
    #[arg(long, env = "RG_BENCH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,
    /// Publish rates to step through, messages/s, comma-separated (default 1,10,50,
    /// 100,200,500,1000,2000,5000,10000).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// Seconds each step publishes (at most 10).
    #[arg(long, default_value_t = 5.0)]
    pub step_secs: f64,
    /// Seconds after a step's last publish before its deliveries are counted.
    #[arg(long, default_value_t = 2.0)]
    pub drain_secs: f64,
    /// Publish batching: what is due is sent every this many ms.
    #[arg(long, default_value_t = 10)]
    pub tick_ms: u64,
    /// Payload bytes per message (the publish time is written into it).
    #[arg(long, default_value_t = 200)]
    pub payload: usize,
    /// The server's pids (repeat; their descendants count too): CPU and RSS per step.
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// Worker processes (`auto`: enough for RLIMIT_NOFILE and the ephemeral ports).
    #[arg(long, default_value = "auto")]
    pub procs: Procs,
    /// Subscribe attempts in flight per worker process.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Subscribe no faster than this many per second over all workers (Pushpin wants
    /// its opens ramped).
    #[arg(long)]
    pub open_rate: Option<f64>,
    /// Time allowed for one subscriber's connect, upgrade and subscribe.
    #[arg(long, default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
    /// ringgate: the topic endpoint each subscriber calls.
    #[arg(long, default_value = "/fanout/watch")]
    pub endpoint: String,
    #[command(flatten)]
    pub gateway: GatewayArgs,
    /// A name for this run (default: the target).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub worker: WorkerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutRawServerArgs {
    /// Where subscribers connect.
    #[arg(long, default_value = "127.0.0.1:5010")]
    pub listen: String,
    /// Where the publisher connects.
    #[arg(long, default_value = "127.0.0.1:5011")]
    pub publish_listen: String,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The baseline report (`rpc --json`).
    pub a: PathBuf,
    /// The report compared with it (ratios are B/A).
    pub b: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ChartArgs {
    /// `rpc` reports (JSON), one curve each.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// The SVG file to write.
    #[arg(long, value_name = "FILE.svg")]
    pub out: PathBuf,
    /// Chart title.
    #[arg(long, default_value = "RPC latency by percentile")]
    pub title: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn compare_flag_and_subcommand_parse_to_the_same_command() {
        let flag = Cli::try_parse_from(["ringgate-bench", "--compare", "a.json", "b.json"])
            .unwrap()
            .into_command();
        let sub = Cli::try_parse_from(["ringgate-bench", "compare", "a.json", "b.json"])
            .unwrap()
            .into_command();
        for c in [flag, sub] {
            match c {
                Command::Compare(CompareArgs { a, b }) => {
                    assert_eq!(a, PathBuf::from("a.json"));
                    assert_eq!(b, PathBuf::from("b.json"));
                }
                other => panic!("not compare: {other:?}"),
            }
        }
        assert!(Cli::try_parse_from(["ringgate-bench", "--compare", "a.json"]).is_err());
        assert!(Cli::try_parse_from(["ringgate-bench", "--compare", "a", "b", "demo"]).is_err());
    }

    #[test]
    fn procs_parse() {
        assert_eq!("auto".parse::<Procs>(), Ok(Procs::Auto));
        assert_eq!("3".parse::<Procs>(), Ok(Procs::Fixed(3)));
        assert!("0".parse::<Procs>().is_err());
        assert!("x".parse::<Procs>().is_err());
    }

    #[test]
    fn load_rate_parse() {
        assert_eq!("max".parse::<LoadRate>(), Ok(LoadRate::Max));
        assert_eq!("2500".parse::<LoadRate>(), Ok(LoadRate::PerSec(2500.0)));
        assert!("0".parse::<LoadRate>().is_err());
        assert!("fast".parse::<LoadRate>().is_err());
    }
}
