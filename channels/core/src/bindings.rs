//! Types generated from the Centralizer's ABI (`contracts/abi/Centralizer.json`), so the Rust
//! structs that get signed are the ones the contract hashes: a change on one side that is not
//! made on the other fails to compile or fails the digest tests against the contract.

#![allow(missing_docs, unreachable_pub, clippy::too_many_arguments)]

alloy_sol_types::sol!(
    #[derive(Debug, PartialEq, Eq)]
    Centralizer,
    "../../contracts/abi/Centralizer.json"
);
