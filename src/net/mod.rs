//! Everything that knows bytes: the protocol, the codec, authentication and connecting.

pub mod auth;
pub mod codec;
pub mod connect;
pub mod protocol;
