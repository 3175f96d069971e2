//! Signatures checked against outside references: the EIP-712 specification's own "Mail"
//! example, alloy's wallet signer, and the JSON typed data a wallet receives through
//! `eth_signTypedData_v4` (the anvil-backed tests in `ipsx-channels-runtime` also compare with
//! anvil's `eth_signTypedData_v4` and the deployed contract's digests).

use alloy_primitives::{Address, B256, U256, address, b256, hex, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{SolStruct, eip712_domain, sol};
use ipsx_channels::{Centralizer, ChannelDomain, ChannelId, SigningKey, recover_signer};

sol! {
    struct Person {
        string name;
        address wallet;
    }
    struct Mail {
        Person from;
        Person to;
        string contents;
    }
}

/// https://eips.ethereum.org/EIPS/eip-712 — `Example.js` / `Example.sol` in the EIP's assets.
#[test]
fn the_eip712_mail_example_signs_to_the_published_vector() {
    let domain = eip712_domain! {
        name: "Ether Mail",
        version: "1",
        chain_id: 1,
        verifying_contract: address!("CcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"),
    };
    let mail = Mail {
        from: Person {
            name: "Cow".into(),
            wallet: address!("CD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"),
        },
        to: Person {
            name: "Bob".into(),
            wallet: address!("bBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"),
        },
        contents: "Hello, Bob!".into(),
    };
    assert_eq!(
        domain.separator(),
        b256!("f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f")
    );
    assert_eq!(
        mail.eip712_hash_struct(),
        b256!("c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e")
    );
    let digest = mail.eip712_signing_hash(&domain);
    assert_eq!(
        digest,
        b256!("be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2")
    );

    let cow = SigningKey::from_bytes(&keccak256(b"cow").0).expect("key");
    assert_eq!(
        cow.address(),
        address!("CD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826")
    );
    let signature = cow.sign_digest(&digest);
    let expected = hex!(
        "4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
        "07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
        "1c"
    );
    assert_eq!(signature.0, expected, "r, s and v = 28 as published");
    assert_eq!(recover_signer(&digest, &signature), Ok(cow.address()));
}

fn deployment() -> ChannelDomain {
    ChannelDomain::new(31337, address!("5FbDB2315678afecb367f032d93F642f64180aa3"))
}

#[test]
fn balance_proofs_match_what_a_wallet_signs() {
    let domain = deployment();
    let key_bytes = keccak256(b"requester").0;
    let ours = SigningKey::from_bytes(&key_bytes).expect("key");
    let wallet = PrivateKeySigner::from_bytes(&B256::from(key_bytes)).expect("wallet");
    let amount = 123_456_789_000_000_000_000u128;

    let proof = domain.sign_balance_proof(&ours, ChannelId(42), amount);
    let typed = Centralizer::BalanceProof {
        channelId: U256::from(42),
        amount: U256::from(amount),
    };
    let from_wallet = wallet
        .sign_typed_data_sync(&typed, domain.eip712())
        .expect("wallet signs");
    assert_eq!(
        proof.signature.0.as_slice(),
        from_wallet.as_bytes().as_slice(),
        "alloy's wallet signer gives the same 65 bytes"
    );
}

#[test]
fn the_digest_equals_the_eth_sign_typed_data_v4_json_a_wallet_receives() {
    let domain = deployment();
    let json = serde_json::json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}
            ],
            "BalanceProof": [
                {"name": "channelId", "type": "uint256"},
                {"name": "amount", "type": "uint256"}
            ]
        },
        "primaryType": "BalanceProof",
        "domain": {
            "name": "IPSX Centralizer",
            "version": "1",
            "chainId": 31337,
            "verifyingContract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"
        },
        "message": {"channelId": "42", "amount": "1000000000000000000"}
    });
    let typed: alloy_dyn_abi::TypedData = serde_json::from_value(json).expect("typed data");
    let digest = typed.eip712_signing_hash().expect("hash");
    assert_eq!(
        digest,
        domain.balance_proof_digest(ChannelId(42), 10u128.pow(18))
    );
    assert_ne!(
        domain.balance_proof_digest(ChannelId(42), 10u128.pow(18)),
        ChannelDomain::new(31337, Address::ZERO)
            .balance_proof_digest(ChannelId(42), 10u128.pow(18))
    );
}
