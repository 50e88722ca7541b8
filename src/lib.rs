//! kpipe
pub mod client;
