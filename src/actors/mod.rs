//! The coordinator's actors. Each owns its state and is its only writer; messages are the only
//! way in.

pub mod ledger;
pub mod ledger_client;
pub mod queue;
pub mod registry;
pub mod scheduler;
pub mod session;
