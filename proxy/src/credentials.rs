//! Lease credentials, from `ipsx-credentials` (the node issues them; see that crate).

pub use ipsx_credentials::*;
