//! How a coordinator runs ([`CoordinatorConfig`]), and how it names itself to its peers.

use crate::fleet::{PoolConfig, ProviderConfig, TokenSource};
use crate::ha::Peer;
use crate::job::RESULT_ROOM;
use crate::metrics::Metrics;
use crate::net::address::Address;
use crate::net::auth::Secret;
use crate::net::codec::DEFAULT_MAX_FRAME;
use crate::net::OpenFiles;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How a coordinator runs.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Where the ledger lives (SQLite), and the coordinator's own files.
    pub data_dir: PathBuf,
    /// Silence after which a worker is lost.
    pub heartbeat_timeout: Duration,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// The client role's secret.
    pub client_secret: Option<Secret>,
    /// The worker role's secret.
    pub worker_secret: Option<Secret>,
    /// A secret that lets HTTP callers read (the dashboard, `/api` GETs) and change nothing.
    pub read_secret: Option<Secret>,
    /// The largest frame accepted.
    pub max_frame: usize,
    /// How long a peer has to authenticate.
    pub handshake_timeout: Duration,
    /// Connections beyond this are closed at once; by default as many as the open-files limit
    /// leaves room for (see [`connection_limit`]).
    pub max_connections: usize,
    /// Backoff before the second attempt of a failed job, doubled after each failure.
    pub retry_backoff: Duration,
    /// Where to serve the HTTP API, metrics and dashboard, if anywhere.
    pub http: Option<String>,
    /// The most jobs one batch may have.
    pub max_batch_jobs: usize,
    /// The most unfinished jobs held before submissions are refused ("queue full").
    pub max_pending_jobs: usize,
    /// The most bytes of unfinished jobs' specs held before submissions are refused.
    pub max_pending_bytes: usize,
    /// Bytes waiting to be sent to one peer above which it is disconnected as not reading.
    pub max_write_buffer: usize,
    /// The most slots one worker may offer.
    pub max_worker_slots: u32,
    /// The most bytes of one attempt's result kept (`--max-result-bytes`, default 1 MiB).
    pub max_result_bytes: usize,
    /// How long a call's job may run before its submission is written on its own (see
    /// [`LedgerConfig::call_write_delay`](crate::actors::ledger::LedgerConfig)).
    pub call_write_delay: Duration,
    /// The certificate chain and private key (PEM files) for TLS on both ports.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse to start without TLS.
    pub require_tls: bool,
    /// The protocol address other coordinators send peers to (`host:port`); by default the
    /// listening address, or this machine's name with its port when it listens on every
    /// address.
    pub advertise: Option<String>,
    /// The HTTP address a standby redirects to when this coordinator leads; by default worked
    /// out from `http` as `advertise` is.
    pub advertise_http: Option<String>,
    /// Where counters and timings are kept, for `/metrics` (shared with the ledger's store).
    pub metrics: Arc<Metrics>,
    /// The elastic fleet's pools (`[[pool]]` in `drover.toml`).
    pub pools: Vec<PoolConfig>,
}

/// The default of [`CoordinatorConfig::max_worker_slots`]: more than any one machine runs at
/// once, few enough that one registration cannot take the queue.
pub const DEFAULT_MAX_WORKER_SLOTS: u32 = 1024;

/// The default of [`CoordinatorConfig::max_write_buffer`]: four of the largest frames.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 4 * DEFAULT_MAX_FRAME;

/// How many connections a coordinator accepts, and what it says of that at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimit {
    /// The most connections open at once.
    pub max: usize,
    /// Whether `--max-connections` set it; else the open-files limit did.
    pub explicit: bool,
    /// One line for the log when the open-files limit cannot hold the connections asked for.
    pub warning: Option<String>,
}

/// The connection limit: `explicit` (`--max-connections`) as given, else as many connections as
/// the open-files limit leaves room for beside the ledger, logs, HTTP and S3, so that a fleet
/// grows with the limit instead of stopping at a fixed number.
pub fn connection_limit(explicit: Option<usize>, open_files: &OpenFiles) -> ConnectionLimit {
    let room = open_files.connections();
    let Some(max) = explicit else {
        return ConnectionLimit {
            max: room,
            explicit: false,
            warning: None,
        };
    };
    let warning = (max > room).then(|| {
        format!(
            "--max-connections {max} is more than the open-files limit of {} holds ({room} \
             connections beside {} descriptors for the ledger, logs, HTTP and S3): connections \
             past that fail; raise the limit (ulimit -n, LimitNOFILE= in a systemd unit) or \
             lower --max-connections",
            open_files.limit,
            open_files.limit.saturating_sub(room as u64)
        )
    });
    ConnectionLimit {
        max,
        explicit: true,
        warning,
    }
}

impl CoordinatorConfig {
    /// Defaults with the ledger in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        CoordinatorConfig {
            data_dir: data_dir.into(),
            heartbeat_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(1),
            client_secret: None,
            worker_secret: None,
            read_secret: None,
            max_frame: DEFAULT_MAX_FRAME,
            handshake_timeout: Duration::from_secs(10),
            max_connections: OpenFiles::now().connections(),
            retry_backoff: Duration::from_secs(1),
            http: None,
            max_batch_jobs: crate::actors::ledger::MAX_JOBS_PER_BATCH,
            max_pending_jobs: crate::actors::ledger::DEFAULT_MAX_UNFINISHED_JOBS,
            max_pending_bytes: crate::actors::ledger::DEFAULT_MAX_UNFINISHED_BYTES,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            max_worker_slots: DEFAULT_MAX_WORKER_SLOTS,
            max_result_bytes: crate::job::DEFAULT_MAX_RESULT_BYTES,
            call_write_delay: crate::actors::ledger::DEFAULT_CALL_WRITE_DELAY,
            tls: None,
            require_tls: false,
            advertise: None,
            advertise_http: None,
            metrics: Arc::new(Metrics::new()),
            pools: Vec::new(),
        }
    }

    /// Refuses limits that cannot work together: a result limit of nothing, or one whose
    /// results do not fit in a frame (with the rest of a result beside them, and within the
    /// workers' frames), so that no worker could ever report them.
    pub fn check(&self) -> Result<(), String> {
        if self.max_result_bytes == 0 {
            return Err(
                "--max-result-bytes must be at least 1 (it is the most bytes of a job's result \
                 kept; larger results go in outputs)"
                    .into(),
            );
        }
        let frame = self.max_frame.min(DEFAULT_MAX_FRAME);
        let most = crate::job::most_result_bytes(frame);
        if self.max_result_bytes > most {
            let workers = if self.max_frame > DEFAULT_MAX_FRAME {
                format!(", and workers send at most {DEFAULT_MAX_FRAME}")
            } else {
                String::new()
            };
            let remedy = if most == 0 {
                format!(
                    "raise --max-frame-bytes to at least {}",
                    self.max_result_bytes + RESULT_ROOM
                )
            } else {
                format!("give --max-result-bytes at most {most}")
            };
            return Err(format!(
                "--max-result-bytes {} does not fit in a frame: a frame holds {} bytes \
                 (--max-frame-bytes {}{workers}), and a result's frame also carries up to \
                 {RESULT_ROOM} bytes of output tail, error and outputs manifest; {remedy}",
                self.max_result_bytes, frame, self.max_frame
            ));
        }
        if let Some(pool) = self
            .pools
            .iter()
            .find(|pool| pool.slots > self.max_worker_slots)
        {
            return Err(format!(
                "pool {:?}: slots ({}) is above --max-worker-slots ({}), so its workers would be \
                 refused; lower slots or raise --max-worker-slots",
                pool.name, pool.slots, self.max_worker_slots
            ));
        }
        let token_in_user_data = |pool: &&PoolConfig| match &pool.provider {
            ProviderConfig::Ec2(ec2) => ec2.token == TokenSource::InUserData,
            ProviderConfig::Process(_) => false,
        };
        if let (None, Some(pool)) = (
            &self.worker_secret,
            self.pools.iter().find(token_in_user_data),
        ) {
            return Err(format!(
                "pool {:?}: worker_token_in_user_data is set but the coordinator has no worker \
                 token to write there; give it one (DROVER_WORKER_TOKEN or --worker-token-file)",
                pool.name
            ));
        }
        Ok(())
    }

    /// This coordinator as its peers should reach it, once its ports are bound.
    pub(super) fn me(
        &self,
        listening: SocketAddr,
        http: Option<SocketAddr>,
    ) -> Result<Peer, String> {
        let address = advertised("--advertise", self.advertise.as_deref(), listening)?;
        let http = match http {
            Some(http) => Some(advertised(
                "--advertise-http",
                self.advertise_http.as_deref(),
                http,
            )?),
            None => None,
        };
        Ok(Peer { address, http })
    }
}

/// The address given, checked; else the bound one, with this machine's name for an address
/// that means every address (no peer can dial `0.0.0.0`).
fn advertised(flag: &str, given: Option<&str>, bound: SocketAddr) -> Result<String, String> {
    if let Some(given) = given {
        let mut address = Address::parse(given).map_err(|error| format!("{flag}: {error}"))?;
        if !names_port(given) {
            address.port = bound.port();
        }
        return Ok(address.to_string());
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound.to_string());
    }
    let host = hostname().ok_or_else(|| {
        format!("cannot tell this machine's name to advertise {bound} by; give {flag} HOST:PORT")
    })?;
    Ok(Address {
        host,
        port: bound.port(),
    }
    .to_string())
}

/// Whether an address as written names its port (`head:7700`, `[::1]:7700`; not `head`, `::1`).
fn names_port(text: &str) -> bool {
    match text.trim().rsplit_once(':') {
        Some((host, port)) => {
            port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
        }
        None => false,
    }
}

/// This machine's name, as the system has it.
fn hostname() -> Option<String> {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let result = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if result != 0 {
        return None;
    }
    let end = buffer.iter().position(|byte| *byte == 0)?;
    let name = std::str::from_utf8(&buffer[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_limit_must_hold_something_and_fit_in_a_frame() {
        let defaults = CoordinatorConfig::new("unused");
        assert_eq!(defaults.check(), Ok(()));
        let most = crate::job::most_result_bytes(DEFAULT_MAX_FRAME);
        let at_most = CoordinatorConfig {
            max_result_bytes: most,
            ..defaults.clone()
        };
        assert_eq!(at_most.check(), Ok(()));

        let nothing = CoordinatorConfig {
            max_result_bytes: 0,
            ..defaults.clone()
        };
        let error = nothing.check().unwrap_err();
        assert!(
            error.starts_with("--max-result-bytes must be at least 1"),
            "{error}"
        );

        let too_large = CoordinatorConfig {
            max_result_bytes: most + 1,
            ..defaults.clone()
        };
        assert_eq!(
            too_large.check().unwrap_err(),
            format!(
                "--max-result-bytes {} does not fit in a frame: a frame holds 16777216 bytes \
                 (--max-frame-bytes 16777216), and a result's frame also carries up to \
                 {RESULT_ROOM} bytes of output tail, error and outputs manifest; give \
                 --max-result-bytes at most {most}",
                most + 1
            )
        );
        // A larger frame does not help: workers' frames are the default's.
        let larger_frame = CoordinatorConfig {
            max_frame: 4 * DEFAULT_MAX_FRAME,
            ..too_large
        };
        let error = larger_frame.check().unwrap_err();
        assert!(
            error.contains("and workers send at most 16777216"),
            "{error}"
        );
        // A frame too small for any result says what frame it takes.
        let small_frame = CoordinatorConfig {
            max_frame: 65536,
            ..defaults
        };
        let error = small_frame.check().unwrap_err();
        assert!(
            error.ends_with(&format!(
                "raise --max-frame-bytes to at least {}",
                1024 * 1024 + RESULT_ROOM
            )),
            "{error}"
        );
    }

    #[test]
    fn a_pool_whose_workers_offer_more_slots_than_allowed_is_refused() {
        let text = "[[pool]]\nname = \"big\"\nprovider = \"process\"\nmax = 1\nslots = 9\n\
                    [pool.process]\ncommand = [\"w\"]\n";
        let config = CoordinatorConfig {
            pools: crate::fleet::parse_pools(text).unwrap(),
            max_worker_slots: 8,
            ..CoordinatorConfig::new("unused")
        };
        assert_eq!(
            config.check().unwrap_err(),
            "pool \"big\": slots (9) is above --max-worker-slots (8), so its workers would be \
             refused; lower slots or raise --max-worker-slots"
        );
    }

    #[test]
    fn a_token_in_user_data_needs_a_worker_token() {
        let text = "[[pool]]\nname = \"gpu\"\nprovider = \"ec2\"\nmax = 1\n[pool.ec2]\n\
                    region = \"r\"\nlaunch_template = \"lt-1\"\n\
                    worker_token_in_user_data = true\n";
        let config = CoordinatorConfig {
            pools: crate::fleet::parse_pools(text).unwrap(),
            ..CoordinatorConfig::new("unused")
        };
        assert_eq!(
            config.check().unwrap_err(),
            "pool \"gpu\": worker_token_in_user_data is set but the coordinator has no worker \
             token to write there; give it one (DROVER_WORKER_TOKEN or --worker-token-file)"
        );
        let with_token = CoordinatorConfig {
            worker_secret: crate::net::auth::Secret::from_text("s"),
            ..config
        };
        assert_eq!(with_token.check(), Ok(()));
    }

    #[test]
    fn a_coordinator_advertises_what_peers_can_dial() {
        let config = CoordinatorConfig::new("unused");
        let me = config
            .me(
                "127.0.0.1:7700".parse().unwrap(),
                Some("127.0.0.1:7701".parse().unwrap()),
            )
            .unwrap();
        assert_eq!(me.address, "127.0.0.1:7700");
        assert_eq!(me.http.as_deref(), Some("127.0.0.1:7701"));

        let anywhere = config.me("0.0.0.0:7700".parse().unwrap(), None).unwrap();
        assert_eq!(anywhere.address, format!("{}:7700", hostname().unwrap()));
        assert_eq!(anywhere.http, None);

        let given = CoordinatorConfig {
            advertise: Some("head-1".into()),
            advertise_http: Some("head-1:8080".into()),
            ..config
        };
        let me = given
            .me(
                "0.0.0.0:9000".parse().unwrap(),
                Some("0.0.0.0:9001".parse().unwrap()),
            )
            .unwrap();
        assert_eq!(
            me.address, "head-1:9000",
            "a host alone keeps the port listened on"
        );
        assert_eq!(me.http.as_deref(), Some("head-1:8080"));

        let bad = CoordinatorConfig {
            advertise: Some("http://head".into()),
            ..CoordinatorConfig::new("unused")
        };
        let error = bad.me("0.0.0.0:9000".parse().unwrap(), None).unwrap_err();
        assert!(error.starts_with("--advertise: "), "{error}");
    }

    #[test]
    fn the_connection_limit_follows_the_open_files_limit_unless_given() {
        let open_files = OpenFiles {
            limit: 20_000,
            hard: 20_000,
            was: 1024,
        };
        assert_eq!(
            connection_limit(None, &open_files),
            ConnectionLimit {
                max: 19_744,
                explicit: false,
                warning: None
            }
        );
        // Given: kept as given, below the room or above it, and said when above.
        let fewer = connection_limit(Some(100), &open_files);
        assert_eq!(
            (fewer.max, fewer.explicit, fewer.warning),
            (100, true, None)
        );
        let more = connection_limit(Some(30_000), &open_files);
        assert_eq!((more.max, more.explicit), (30_000, true));
        let warning = more.warning.unwrap();
        assert!(
            warning.starts_with(
                "--max-connections 30000 is more than the open-files limit of 20000 holds \
                 (19744 connections beside 256 descriptors"
            ),
            "{warning}"
        );
        assert!(!warning.contains('\n'), "one line: {warning}");
    }
}
