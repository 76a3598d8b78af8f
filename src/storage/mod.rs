//! Durable storage behind the Ledger.

pub mod journal;
pub mod queries;
