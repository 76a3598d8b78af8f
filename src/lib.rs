//! drover: a cluster job coordinator.
//!
//! # Layout
//!
//! - [`job`], [`status`]: the domain types (a job, its states, what clients are told).
//! - [`net`]: the only code that knows bytes: protocol messages, the frame codec, authentication,
//!   and the client side of the handshake.
//! - [`storage`]: the Ledger's store (an interface, and SQLite behind it), the workers' S3 client.
//! - [`actors`]: the coordinator's four actors: Session, Registry, Scheduler, Ledger (whose state
//!   and rules are a plain job book).
//! - [`coordinator`]: starts the actors and accepts connections.
//! - [`ha`]: which of several coordinators leads a ledger.
//! - [`worker`]: the worker runtime (`drover-worker`, or a library for custom handlers).
//! - [`client`]: the client library the CLI is built on.
//! - [`jobfile`]: the JSON Lines job file parser.
//! - [`local`]: a coordinator and workers in one process, for `drover local` and examples.
//!
//! See ARCHITECTURE.md for the bird's-eye view and the invariants.

pub mod actors;
mod aws;
pub mod cli;
pub mod client;
pub mod config;
pub mod coordinator;
pub mod fleet;
pub mod ha;
pub mod http;
pub mod job;
pub mod jobfile;
pub mod keep_awake;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod status;
pub mod storage;
pub mod worker;
