//! placeholder
pub mod chain;
pub mod contracts;
pub mod devnet;
pub mod settle;
pub mod store;
pub mod watcher;
