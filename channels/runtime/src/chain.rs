//! The chain client: the Centralizer and the IPSX token over JSON-RPC, through alloy.
//!
//! Every call that changes state sends one transaction, waits for its receipt and returns what
//! the contract emitted. A revert comes back as [`ChainError::Reverted`] with the contract's own
//! error name and arguments (e.g. `AmountNotIncreasing(3, 500, 400)`), decoded from the ABI.

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::Filter;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{SolEvent, SolStruct, eip712_domain};
use ipsx_channels::{ChannelDomain, ChannelId, Signature, SignedProof, SigningKey};

use crate::contracts::{Centralizer, IPSXToken, Permit};
use crate::sender::{Sender, SenderConfig};

/// How long to wait for a sent transaction's receipt before giving up with an error.
pub const RECEIPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// A chain call that failed.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The contract refused the call.
    #[error("the contract refused: {0}")]
    Reverted(String),
    /// The node could not be reached or answered something unexpected.
    #[error("JSON-RPC: {0}")]
    Rpc(String),
    /// The receipt lacks the event the call must emit.
    #[error("the transaction succeeded without emitting {0}")]
    MissingEvent(&'static str),
    /// A value from the chain that does not fit (an amount above 2^128, a channel id above
    /// 2^64).
    #[error("{0} from the chain does not fit")]
    OutOfRange(&'static str),
    /// A bad endpoint or key.
    #[error("{0}")]
    Config(String),
}

impl From<alloy::contract::Error> for ChainError {
    fn from(error: alloy::contract::Error) -> Self {
        if let Some(decoded) = error.as_decoded_interface_error::<Centralizer::CentralizerErrors>()
        {
            return Self::Reverted(format!("{decoded:?}"));
        }
        if let Some(decoded) = error.as_decoded_interface_error::<IPSXToken::IPSXTokenErrors>() {
            return Self::Reverted(format!("{decoded:?}"));
        }
        match error.as_revert_data() {
            Some(data) => Self::Reverted(format!("revert data {data}")),
            None => Self::Rpc(error.to_string()),
        }
    }
}

impl From<alloy::transports::TransportError> for ChainError {
    fn from(error: alloy::transports::TransportError) -> Self {
        Self::Rpc(error.to_string())
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(error: alloy::providers::PendingTransactionError) -> Self {
        Self::Rpc(error.to_string())
    }
}

/// A channel as the contract holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelState {
    /// Who pays.
    pub sender: Address,
    /// Who is paid.
    pub receiver: Address,
    /// Reserved for the channel.
    pub deposit: u128,
    /// Paid out so far.
    pub claimed: u128,
    /// While closing: the amount owed as it stands.
    pub closing_amount: u128,
    /// While closing: when the challenge period ends (unix seconds).
    pub close_deadline: u64,
    /// 0 none, 1 open, 2 closing, 3 settled.
    pub status: u8,
}

/// What a checkpoint paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpointed {
    /// The channel.
    pub channel: ChannelId,
    /// The cumulative amount now claimed.
    pub amount: u128,
    /// Credited to the receiver by this checkpoint.
    pub paid_to_receiver: u128,
    /// Credited to the treasury by this checkpoint.
    pub commission: u128,
}

/// A client of one Centralizer deployment, sending as one account.
#[derive(Debug, Clone)]
pub struct ChainClient {
    provider: DynProvider,
    /// Sends this account's transactions, one at a time (see [`crate::sender`]).
    sender: Sender,
    centralizer: Centralizer::CentralizerInstance<DynProvider>,
    token: IPSXToken::IPSXTokenInstance<DynProvider>,
    key: SigningKey,
    domain: ChannelDomain,
}

/// Sends a contract call and waits (up to [`RECEIPT_TIMEOUT`]) for its receipt.
pub(crate) async fn confirm<P, D>(
    call: alloy::contract::CallBuilder<P, D>,
) -> Result<alloy::rpc::types::TransactionReceipt, ChainError>
where
    P: Provider,
    D: alloy::contract::CallDecoder,
{
    Ok(call
        .send()
        .await?
        .with_timeout(Some(RECEIPT_TIMEOUT))
        .get_receipt()
        .await?)
}

pub(crate) fn to_u128(value: U256, what: &'static str) -> Result<u128, ChainError> {
    u128::try_from(value).map_err(|_| ChainError::OutOfRange(what))
}

fn to_channel(value: U256) -> Result<ChannelId, ChainError> {
    u64::try_from(value)
        .map(ChannelId)
        .map_err(|_| ChainError::OutOfRange("channel id"))
}

/// The signer of `key` and the parsed endpoint, or why not.
fn signer_and_url(
    rpc_url: &str,
    key: &SigningKey,
) -> Result<(PrivateKeySigner, alloy::transports::http::reqwest::Url), ChainError> {
    let signer = PrivateKeySigner::from_bytes(&key.to_bytes().into())
        .map_err(|e| ChainError::Config(format!("key: {e}")))?;
    let url = rpc_url
        .parse()
        .map_err(|e| ChainError::Config(format!("RPC URL {rpc_url:?}: {e}")))?;
    Ok((signer, url))
}

/// A provider that signs as `key` and fills in nothing else: the account's [`Sender`] sets the
/// nonce, gas and fees.
fn signing_provider(rpc_url: &str, key: &SigningKey) -> Result<DynProvider, ChainError> {
    let (signer, url) = signer_and_url(rpc_url, key)?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

/// A provider sending transactions signed by `key`, asking the node for each nonce (for
/// one-off senders such as a local deployment; a [`ChainClient`] sends through its
/// [`Sender`]).
pub fn wallet_provider(rpc_url: &str, key: &SigningKey) -> Result<DynProvider, ChainError> {
    let (signer, url) = signer_and_url(rpc_url, key)?;
    // Nonces are asked of the node for every transaction (not cached): a call refused at gas
    // estimation must not burn a nonce and leave a gap that stalls every later transaction.
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .with_simple_nonce_management()
        .fetch_chain_id()
        .wallet(EthereumWallet::from(signer))
        .connect_http(url)
        .erased())
}

/// Calls a view of the contract at `to` through `rpc_url` with `calldata`, as nobody in
/// particular (reading needs no key): for clients that check what a node claims.
pub async fn read_view(rpc_url: &str, to: Address, calldata: Bytes) -> Result<Bytes, ChainError> {
    let url = rpc_url
        .parse()
        .map_err(|e| ChainError::Config(format!("RPC URL {rpc_url:?}: {e}")))?;
    let provider = ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(url);
    let tx = alloy::rpc::types::TransactionRequest::default()
        .with_to(to)
        .with_input(calldata);
    Ok(provider.call(tx).await?)
}

impl ChainClient {
    /// Connects to the Centralizer at `centralizer` through `rpc_url`, sending as `key`. Reads
    /// the token address and chain id, and checks the contract's EIP-712 domain is the one
    /// proofs are signed in.
    pub async fn connect(
        rpc_url: &str,
        centralizer: Address,
        key: SigningKey,
    ) -> Result<Self, ChainError> {
        Self::connect_with(rpc_url, centralizer, key, SenderConfig::default()).await
    }

    /// [`ChainClient::connect`], with the account's sender priced and paced by `sender`.
    pub async fn connect_with(
        rpc_url: &str,
        centralizer: Address,
        key: SigningKey,
        sender: SenderConfig,
    ) -> Result<Self, ChainError> {
        let provider = wallet_provider(rpc_url, &key)?;
        let sender = Sender::spawn(signing_provider(rpc_url, &key)?, key.address(), sender);
        let chain_id = provider.get_chain_id().await?;
        let instance = Centralizer::new(centralizer, provider.clone());
        let token_address = instance.token().call().await?;
        let domain = ChannelDomain::new(chain_id, centralizer);
        let separator = instance.domainSeparator().call().await?;
        if separator != domain.separator() {
            return Err(ChainError::Config(format!(
                "the contract at {centralizer} has domain separator {separator}, expected {} \
                 (not an IPSX Centralizer v1 on chain {chain_id})",
                domain.separator()
            )));
        }
        Ok(Self {
            token: IPSXToken::new(token_address, provider.clone()),
            centralizer: instance,
            provider,
            sender,
            key,
            domain,
        })
    }

    /// Estimates a call as this account (a call the contract refuses fails here, decoded, and
    /// takes no nonce), then sends it through the account's sender and waits for it to be
    /// mined.
    async fn confirm<D>(
        &self,
        call: alloy::contract::CallBuilder<&DynProvider, D>,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError>
    where
        D: alloy::contract::CallDecoder,
    {
        let call = call.from(self.address());
        let gas = call.estimate_gas().await?;
        self.send_estimated(call.into_transaction_request(), gas)
            .await
    }

    /// Sends `calldata` to the contract at `to` as this account, like the Centralizer's own
    /// calls: estimated first (a refused call fails here and takes no nonce), then through the
    /// account's sender, waiting for it to be mined. For the node's other contracts (the deal
    /// anchor), whose calls their own crates encode; a refusal comes back as
    /// [`ChainError::Rpc`] with the node's message and revert data.
    pub async fn send_call(
        &self,
        to: Address,
        calldata: Bytes,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .with_from(self.address())
            .with_to(to)
            .with_input(calldata);
        let gas = self.provider.estimate_gas(tx.clone()).await?;
        self.send_estimated(tx, gas).await
    }

    /// Calls a view of the contract at `to` with `calldata`; returns what it returned.
    pub async fn call_view(&self, to: Address, calldata: Bytes) -> Result<Bytes, ChainError> {
        let tx = alloy::rpc::types::TransactionRequest::default()
            .with_to(to)
            .with_input(calldata);
        Ok(self.provider.call(tx).await?)
    }

    /// Sends `tx`, estimated at `gas`, through the account's sender and waits for it.
    async fn send_estimated(
        &self,
        tx: alloy::rpc::types::TransactionRequest,
        gas: u64,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        // Room over the estimate: state can move between estimating and mining.
        let tx = tx.with_gas_limit(gas + gas / 4);
        let receipt = self.sender.send(tx).await?;
        if !receipt.status() {
            return Err(ChainError::Reverted(format!(
                "transaction {} reverted on chain",
                receipt.transaction_hash
            )));
        }
        Ok(receipt)
    }

    /// The account this client sends as.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// The EIP-712 domain of the deployment.
    pub fn domain(&self) -> &ChannelDomain {
        &self.domain
    }

    /// The JSON-RPC provider.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }

    /// The Centralizer's address.
    pub fn centralizer_address(&self) -> Address {
        *self.centralizer.address()
    }

    /// The token's address.
    pub fn token_address(&self) -> Address {
        *self.token.address()
    }

    /// Moves `amount` of this account's tokens into its Centralizer balance in one transaction,
    /// authorised by an ERC-2612 permit signed here.
    pub async fn deposit_with_permit(&self, amount: u128) -> Result<(), ChainError> {
        let owner = self.address();
        let nonce = self.token.nonces(owner).call().await?;
        let chain_id = self.provider.get_chain_id().await?;
        let name = self.token.name().call().await?;
        let deadline = U256::from(u64::MAX);
        let permit = Permit {
            owner,
            spender: self.centralizer_address(),
            value: U256::from(amount),
            nonce,
            deadline,
        };
        let domain = eip712_domain! {
            name: name,
            version: "1",
            chain_id: chain_id,
            verifying_contract: self.token_address(),
        };
        let signature = self.key.sign_digest(&permit.eip712_signing_hash(&domain));
        let bytes = signature.as_bytes();
        let (r, s, v) = (
            alloy::primitives::B256::from_slice(&bytes[..32]),
            alloy::primitives::B256::from_slice(&bytes[32..64]),
            bytes[64],
        );
        self.confirm(
            self.centralizer
                .depositWithPermit(U256::from(amount), deadline, v, r, s),
        )
        .await?;
        Ok(())
    }

    /// Moves `amount` of this account's free Centralizer balance back to its wallet.
    pub async fn withdraw(&self, amount: u128) -> Result<(), ChainError> {
        self.confirm(self.centralizer.withdraw(U256::from(amount)))
            .await?;
        Ok(())
    }

    /// Opens a channel to `receiver` with `deposit` from this account's balance.
    pub async fn open_channel(
        &self,
        receiver: Address,
        deposit: u128,
    ) -> Result<ChannelId, ChainError> {
        let receipt = self
            .confirm(self.centralizer.openChannel(receiver, U256::from(deposit)))
            .await?;
        let opened = receipt
            .decoded_log::<Centralizer::ChannelOpened>()
            .ok_or(ChainError::MissingEvent("ChannelOpened"))?;
        to_channel(opened.channelId)
    }

    /// Adds `amount` to a channel this account sends on.
    pub async fn top_up(&self, channel: ChannelId, amount: u128) -> Result<(), ChainError> {
        self.confirm(
            self.centralizer
                .topUp(U256::from(channel.0), U256::from(amount)),
        )
        .await?;
        Ok(())
    }

    /// Claims what a proof adds since the last claim.
    pub async fn checkpoint(&self, proof: &SignedProof) -> Result<Checkpointed, ChainError> {
        let receipt = self
            .confirm(self.centralizer.checkpoint(
                U256::from(proof.channel.0),
                U256::from(proof.amount),
                Bytes::copy_from_slice(proof.signature.as_bytes()),
            ))
            .await?;
        let mut paid = checkpoints(&receipt)?;
        paid.pop().ok_or(ChainError::MissingEvent("Checkpointed"))
    }

    /// Claims many proofs in one transaction.
    pub async fn batch_checkpoint(
        &self,
        proofs: &[SignedProof],
    ) -> Result<Vec<Checkpointed>, ChainError> {
        let ids = proofs.iter().map(|p| U256::from(p.channel.0)).collect();
        let amounts = proofs.iter().map(|p| U256::from(p.amount)).collect();
        let signatures = proofs
            .iter()
            .map(|p| Bytes::copy_from_slice(p.signature.as_bytes()))
            .collect();
        let receipt = self
            .confirm(self.centralizer.batchCheckpoint(ids, amounts, signatures))
            .await?;
        checkpoints(&receipt)
    }

    /// This account's signature on a cooperative close of `channel` at `amount`.
    pub fn sign_cooperative_close(&self, channel: ChannelId, amount: u128) -> Signature {
        self.domain
            .sign_cooperative_close(&self.key, channel, amount)
    }

    /// Closes at once with both parties' signatures.
    pub async fn cooperative_close(
        &self,
        channel: ChannelId,
        amount: u128,
        sender_signature: &Signature,
        receiver_signature: &Signature,
    ) -> Result<(), ChainError> {
        self.confirm(self.centralizer.cooperativeClose(
            U256::from(channel.0),
            U256::from(amount),
            Bytes::copy_from_slice(sender_signature.as_bytes()),
            Bytes::copy_from_slice(receiver_signature.as_bytes()),
        ))
        .await?;
        Ok(())
    }

    /// As the receiver, closes at once, paid up to `proof`.
    pub async fn receiver_close(&self, proof: &SignedProof) -> Result<(), ChainError> {
        self.confirm(self.centralizer.receiverClose(
            U256::from(proof.channel.0),
            U256::from(proof.amount),
            Bytes::copy_from_slice(proof.signature.as_bytes()),
        ))
        .await?;
        Ok(())
    }

    /// As the sender, starts a unilateral close admitting `amount` owed.
    pub async fn start_close(&self, channel: ChannelId, amount: u128) -> Result<(), ChainError> {
        self.confirm(
            self.centralizer
                .startClose(U256::from(channel.0), U256::from(amount)),
        )
        .await?;
        Ok(())
    }

    /// During a close, raises the amount owed with a newer proof.
    pub async fn challenge(&self, proof: &SignedProof) -> Result<(), ChainError> {
        self.confirm(self.centralizer.challenge(
            U256::from(proof.channel.0),
            U256::from(proof.amount),
            Bytes::copy_from_slice(proof.signature.as_bytes()),
        ))
        .await?;
        Ok(())
    }

    /// After the challenge period, pays out a closing channel.
    pub async fn settle(&self, channel: ChannelId) -> Result<(), ChainError> {
        self.confirm(self.centralizer.settle(U256::from(channel.0)))
            .await?;
        Ok(())
    }

    /// A channel's state on chain.
    pub async fn channel(&self, channel: ChannelId) -> Result<ChannelState, ChainError> {
        let c = self
            .centralizer
            .getChannel(U256::from(channel.0))
            .call()
            .await?;
        Ok(ChannelState {
            sender: c.sender,
            receiver: c.receiver,
            deposit: to_u128(c.deposit, "deposit")?,
            claimed: to_u128(c.claimed, "claimed")?,
            closing_amount: to_u128(c.closingAmount, "closing amount")?,
            close_deadline: c.closeDeadline,
            status: c.status,
        })
    }

    /// Free balance in the Centralizer.
    pub async fn balance_of(&self, who: Address) -> Result<u128, ChainError> {
        to_u128(self.centralizer.balanceOf(who).call().await?, "balance")
    }

    /// What `who` holds in the unsettled channels it sends on: what settling them now would
    /// return to it (`refundOf`). The contract keeps no per-wallet sum (a checkpoint would
    /// have to write it), so the channels are found by their `ChannelOpened` logs, whose
    /// sender is indexed: one log query and one call per channel the wallet opened.
    pub async fn held_in_channels(&self, who: Address) -> Result<u128, ChainError> {
        let filter = Filter::new()
            .address(*self.centralizer.address())
            .event_signature(Centralizer::ChannelOpened::SIGNATURE_HASH)
            .topic2(who.into_word())
            .from_block(0);
        let logs = self.provider.get_logs(&filter).await?;
        let mut held = 0u128;
        for log in logs {
            let opened = log
                .log_decode::<Centralizer::ChannelOpened>()
                .map_err(|e| ChainError::Rpc(e.to_string()))?;
            let refund = self
                .centralizer
                .refundOf(opened.inner.data.channelId)
                .call()
                .await?;
            held = held.saturating_add(to_u128(refund, "refund")?);
        }
        Ok(held)
    }

    /// Token balance of a wallet.
    pub async fn token_balance(&self, who: Address) -> Result<u128, ChainError> {
        to_u128(self.token.balanceOf(who).call().await?, "token balance")
    }

    /// Sends tokens from this account.
    pub async fn transfer_tokens(&self, to: Address, amount: u128) -> Result<(), ChainError> {
        self.confirm(self.token.transfer(to, U256::from(amount)))
            .await?;
        Ok(())
    }

    /// The commission the contract takes on `amount`, as it computes it.
    pub async fn commission_on(&self, amount: u128) -> Result<u128, ChainError> {
        to_u128(
            self.centralizer
                .commissionOn(U256::from(amount))
                .call()
                .await?,
            "commission",
        )
    }

    /// The treasury that receives commissions (the node, in the hub model).
    pub async fn treasury(&self) -> Result<Address, ChainError> {
        Ok(self.centralizer.treasury().call().await?)
    }

    /// Seconds a unilateral close stays open to challenges.
    pub async fn challenge_period(&self) -> Result<u64, ChainError> {
        Ok(self.centralizer.challengePeriod().call().await?)
    }
}

fn checkpoints(
    receipt: &alloy::rpc::types::TransactionReceipt,
) -> Result<Vec<Checkpointed>, ChainError> {
    receipt
        .inner
        .logs()
        .iter()
        .filter_map(|log| log.log_decode::<Centralizer::Checkpointed>().ok())
        .map(|log| {
            let event = log.inner.data;
            Ok(Checkpointed {
                channel: to_channel(event.channelId)?,
                amount: to_u128(event.amount, "amount")?,
                paid_to_receiver: to_u128(event.paidToReceiver, "payout")?,
                commission: to_u128(event.commission, "commission")?,
            })
        })
        .collect()
}
