// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title IPSX Centralizer: the wallet and its payment channels
/// @notice Every user has a free `balanceOf`. Deposits come in with approve or ERC-2612 permit;
///         withdrawals leave from the free balance.
///
///         Channels are one-way, sender to receiver, funded from the sender's balance: the
///         deposit moves into the channel (no token transfer) and the channel holds it until it
///         settles. The sender pays off-chain by signing EIP-712 `BalanceProof(channelId,
///         amount)` messages with a growing cumulative amount. Anyone may `checkpoint` a proof:
///         the receiver is credited what it adds since the last claim, less the platform
///         commission, and the channel stays open (`batchCheckpoint` does many in one
///         transaction). The commission is taken on the cumulative amount (the commission on
///         everything claimed so far, less what earlier checkpoints took), so it never depends
///         on how a sum was split into checkpoints. It goes to the treasury at once — except on
///         a channel the treasury itself sends on, where it simply stays in the channel and
///         returns to the treasury with the rest of the deposit when the channel settles.
///
///         Closing: both parties sign `CooperativeClose(channelId, amount)` (immediate); or the
///         receiver settles at once with a balance proof; or the sender starts a unilateral
///         close, after which anyone may submit a newer balance proof during the challenge
///         period, and `settle` pays out once it is over. What is left of the deposit returns
///         to the sender's balance. Each meaning has its own signed type, so a
///         balance proof can never pass as a closing signature; the domain binds chain id and
///         this contract. Nobody, the deployer included, can move users' funds or change how
///         signatures are checked: there is no owner.
///
///         Gas: a channel's parties, amounts and status fit in two slots (a third holds a close
///         while it runs), and a checkpoint writes one of them and the receiver's balance — and
///         the treasury's, only when the treasury is neither party (in the hub model it is always
///         one). Amounts fit in 96 bits (the supply is 1.8e27 base units), a channel's deposit in
///         88 (3.09e26, about 309 million IPSX). Only calls that move tokens take the
///         (transient-storage) reentrancy guard: the rest call out to nothing but the ecrecover
///         precompile. Signatures are 65 bytes or EIP-2098's 64.
contract Centralizer is EIP712, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Open,
        Closing,
        Settled
    }

    /// @notice A channel as `getChannel` reports it.
    struct Channel {
        address sender;
        address receiver;
        uint256 deposit;
        /// Cumulative amount paid out to the receiver so far.
        uint256 claimed;
        /// While closing: the highest amount admitted or proven owed.
        uint256 closingAmount;
        uint64 closeDeadline;
        Status status;
    }

    /// A channel as stored. Slots 0 and 1 are what every payment reads; slot 2 only a close.
    struct Stored {
        address sender;
        uint88 deposit;
        Status status;
        address receiver;
        uint96 claimed;
        uint96 closingAmount;
        uint64 closeDeadline;
    }


    /// @notice What a sender signs to pay: the cumulative `amount` owed on `channelId`. Exposed as a
    ///         struct so the ABI carries its EIP-712 type, from which clients generate theirs.
    struct BalanceProof {
        uint256 channelId;
        uint256 amount;
    }

    /// @notice What both parties sign to close `channelId` with `amount` paid in all.
    struct CooperativeClose {
        uint256 channelId;
        uint256 amount;
    }

    bytes32 public constant BALANCE_PROOF_TYPEHASH = keccak256("BalanceProof(uint256 channelId,uint256 amount)");
    bytes32 public constant COOPERATIVE_CLOSE_TYPEHASH =
        keccak256("CooperativeClose(uint256 channelId,uint256 amount)");
    /// @notice The highest commission the constructor accepts: 10 %.
    uint16 public constant MAX_COMMISSION_BPS = 1_000;
    /// @notice The most a channel can hold (2^88 - 1 base units, about 309 million IPSX).
    uint256 public constant MAX_DEPOSIT = type(uint88).max;

    IERC20 public immutable token;
    address public immutable treasury;
    uint16 public immutable commissionBps;
    uint64 public immutable challengePeriod;

    /// @notice A wallet's free balance: what it can withdraw or put into channels.
    mapping(address => uint256) public balanceOf;
    mapping(uint256 => Stored) private channels;
    /// @notice Channels opened so far; ids are 1, 2, … and never repeat.
    uint256 public channelCount;

    event Deposited(address indexed user, uint256 amount);
    event Withdrawn(address indexed user, uint256 amount);
    event ChannelOpened(uint256 indexed channelId, address indexed sender, address indexed receiver, uint256 deposit);
    event ChannelToppedUp(uint256 indexed channelId, uint256 added, uint256 deposit);
    event Checkpointed(uint256 indexed channelId, uint256 amount, uint256 paidToReceiver, uint256 commission);
    event CloseStarted(uint256 indexed channelId, uint256 amount, uint64 deadline);
    event CloseChallenged(uint256 indexed channelId, uint256 amount);
    event ChannelSettled(uint256 indexed channelId, uint256 totalPaid, uint256 refunded);

    error ZeroAddress();
    error CommissionTooHigh(uint16 bps);
    error ZeroAmount();
    error InsufficientBalance(uint256 available, uint256 requested);
    error SelfChannel();
    error UnknownChannel(uint256 channelId);
    error NotOpen(uint256 channelId);
    error NotClosing(uint256 channelId);
    error NotSender(uint256 channelId);
    error NotReceiver(uint256 channelId);
    error BadSignature(uint256 channelId);
    error AmountNotIncreasing(uint256 channelId, uint256 current, uint256 proposed);
    error AmountAboveDeposit(uint256 channelId, uint256 deposit, uint256 amount);
    error AmountBelowClaimed(uint256 channelId, uint256 claimed, uint256 amount);
    error ChallengePeriodOver(uint256 channelId);
    error ChallengePeriodRunning(uint256 channelId, uint64 deadline);
    error LengthMismatch();
    error DepositTooLarge(uint256 deposit, uint256 max);

    constructor(IERC20 token_, address treasury_, uint16 commissionBps_, uint64 challengePeriod_)
        EIP712("IPSX Centralizer", "1")
    {
        if (address(token_) == address(0) || treasury_ == address(0)) revert ZeroAddress();
        if (commissionBps_ > MAX_COMMISSION_BPS) revert CommissionTooHigh(commissionBps_);
        token = token_;
        treasury = treasury_;
        commissionBps = commissionBps_;
        challengePeriod = challengePeriod_;
    }

    // ----- wallet -------------------------------------------------------------------------

    /// @notice Deposit `amount` after approving this contract.
    function deposit(uint256 amount) external nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @notice Deposit with an ERC-2612 permit: one transaction, no prior approve. A permit
    ///         already used (front-run) is tolerated if the allowance is there.
    function depositWithPermit(uint256 amount, uint256 deadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        try IERC20Permit(address(token)).permit(msg.sender, address(this), amount, deadline, v, r, s) {} catch {}
        _deposit(msg.sender, amount);
    }

    function _deposit(address user, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        balanceOf[user] += amount;
        emit Deposited(user, amount);
        token.safeTransferFrom(user, address(this), amount);
    }

    /// @notice Withdraw from the free balance.
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 available = balanceOf[msg.sender];
        if (amount > available) revert InsufficientBalance(available, amount);
        balanceOf[msg.sender] = available - amount;
        emit Withdrawn(msg.sender, amount);
        token.safeTransfer(msg.sender, amount);
    }

    // ----- channels -----------------------------------------------------------------------

    /// @notice Open a channel to `receiver` funded with `amount` of your balance.
    function openChannel(address receiver, uint256 amount) external returns (uint256 channelId) {
        if (receiver == address(0)) revert ZeroAddress();
        if (receiver == msg.sender) revert SelfChannel();
        if (amount > MAX_DEPOSIT) revert DepositTooLarge(amount, MAX_DEPOSIT);
        _fundFrom(msg.sender, amount);
        channelId = ++channelCount;
        Stored storage channel = channels[channelId];
        channel.sender = msg.sender;
        channel.deposit = uint88(amount);
        channel.status = Status.Open;
        channel.receiver = receiver;
        emit ChannelOpened(channelId, msg.sender, receiver, amount);
    }

    /// @notice Add `amount` of your balance to an open channel you send on.
    function topUp(uint256 channelId, uint256 amount) external {
        Stored storage channel = _open(channelId);
        if (msg.sender != channel.sender) revert NotSender(channelId);
        uint256 topped = channel.deposit + amount;
        if (topped > MAX_DEPOSIT) revert DepositTooLarge(topped, MAX_DEPOSIT);
        _fundFrom(msg.sender, amount);
        channel.deposit = uint88(topped);
        emit ChannelToppedUp(channelId, amount, topped);
    }

    /// @notice Pay the receiver what a sender-signed balance proof adds since the last claim.
    function checkpoint(uint256 channelId, uint256 amount, bytes calldata senderSignature) external {
        _checkpoint(channelId, amount, senderSignature);
    }

    /// @notice Checkpoint many channels in one transaction (a hub settling with its providers).
    function batchCheckpoint(
        uint256[] calldata channelIds,
        uint256[] calldata amounts,
        bytes[] calldata senderSignatures
    ) external {
        if (channelIds.length != amounts.length || amounts.length != senderSignatures.length) {
            revert LengthMismatch();
        }
        for (uint256 i = 0; i < channelIds.length; i++) {
            _checkpoint(channelIds[i], amounts[i], senderSignatures[i]);
        }
    }

    /// @notice Close at once with both parties' `CooperativeClose` signatures.
    function cooperativeClose(
        uint256 channelId,
        uint256 amount,
        bytes calldata senderSignature,
        bytes calldata receiverSignature
    ) external {
        Stored storage channel = _existing(channelId);
        if (channel.status != Status.Open && channel.status != Status.Closing) revert NotOpen(channelId);
        bytes32 digest = cooperativeCloseDigest(channelId, amount);
        if (_signer(digest, senderSignature) != channel.sender) revert BadSignature(channelId);
        if (_signer(digest, receiverSignature) != channel.receiver) revert BadSignature(channelId);
        _settle(channelId, channel, amount);
    }

    /// @notice The receiver closes at once, paid up to a balance proof (or to what it already
    ///         claimed, with an empty signature). Safe for the sender: the receiver can only take
    ///         what the sender signed.
    function receiverClose(uint256 channelId, uint256 amount, bytes calldata senderSignature) external {
        Stored storage channel = _existing(channelId);
        if (channel.status != Status.Open && channel.status != Status.Closing) revert NotOpen(channelId);
        if (msg.sender != channel.receiver) revert NotReceiver(channelId);
        uint256 finalAmount = channel.claimed;
        if (senderSignature.length > 0) {
            _checkProof(channelId, channel, amount, senderSignature);
            finalAmount = amount;
        }
        if (channel.status == Status.Closing && channel.closingAmount > finalAmount) {
            finalAmount = channel.closingAmount;
        }
        _settle(channelId, channel, finalAmount);
    }

    /// @notice The sender starts closing, admitting it owes `amount` in all. The receiver (or a
    ///         watcher for it) has `challengePeriod` seconds to prove more with a balance proof.
    function startClose(uint256 channelId, uint256 amount) external {
        Stored storage channel = _open(channelId);
        if (msg.sender != channel.sender) revert NotSender(channelId);
        if (amount < channel.claimed) revert AmountBelowClaimed(channelId, channel.claimed, amount);
        if (amount > channel.deposit) revert AmountAboveDeposit(channelId, channel.deposit, amount);
        uint64 deadline = uint64(block.timestamp) + challengePeriod;
        channel.status = Status.Closing;
        channel.closingAmount = uint96(amount);
        channel.closeDeadline = deadline;
        emit CloseStarted(channelId, amount, deadline);
    }

    /// @notice During a close, raise the amount owed with a newer balance proof.
    function challenge(uint256 channelId, uint256 amount, bytes calldata senderSignature) external {
        Stored storage channel = _existing(channelId);
        if (channel.status != Status.Closing) revert NotClosing(channelId);
        if (block.timestamp >= channel.closeDeadline) revert ChallengePeriodOver(channelId);
        if (amount <= channel.closingAmount) {
            revert AmountNotIncreasing(channelId, channel.closingAmount, amount);
        }
        _checkProof(channelId, channel, amount, senderSignature);
        channel.closingAmount = uint96(amount);
        emit CloseChallenged(channelId, amount);
    }

    /// @notice After the challenge period, pay the receiver and refund the sender.
    function settle(uint256 channelId) external {
        Stored storage channel = _existing(channelId);
        if (channel.status != Status.Closing) revert NotClosing(channelId);
        if (block.timestamp < channel.closeDeadline) {
            revert ChallengePeriodRunning(channelId, channel.closeDeadline);
        }
        _settle(channelId, channel, channel.closingAmount);
    }

    // ----- views --------------------------------------------------------------------------

    /// @notice A channel's state.
    function getChannel(uint256 channelId) external view returns (Channel memory) {
        Stored storage stored = channels[channelId];
        return Channel({
            sender: stored.sender,
            receiver: stored.receiver,
            deposit: stored.deposit,
            claimed: stored.claimed,
            closingAmount: stored.closingAmount,
            closeDeadline: stored.closeDeadline,
            status: stored.status
        });
    }

    /// @notice What settling a channel now would return to its sender: the deposit less what
    ///         was claimed, plus the commission kept in it when the treasury sends on it. The
    ///         sum of this over a wallet's unsettled channels is what it holds in channels.
    function refundOf(uint256 channelId) public view returns (uint256) {
        Stored storage channel = channels[channelId];
        if (channel.status == Status.None || channel.status == Status.Settled) return 0;
        uint256 claimed = channel.claimed;
        uint256 kept = channel.sender == treasury ? commissionOn(claimed) : 0;
        return channel.deposit - claimed + kept;
    }

    /// @notice The EIP-712 digest a sender signs for a cumulative `amount` on a channel.
    function balanceProofDigest(uint256 channelId, uint256 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(BALANCE_PROOF_TYPEHASH, channelId, amount)));
    }

    /// @notice The EIP-712 digest both parties sign to close a channel at `amount`.
    function cooperativeCloseDigest(uint256 channelId, uint256 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(COOPERATIVE_CLOSE_TYPEHASH, channelId, amount)));
    }

    /// @notice The EIP-712 digest of a balance proof (same as `balanceProofDigest`), typed so the
    ///         ABI describes the signed struct.
    function hashBalanceProof(BalanceProof calldata proof) external view returns (bytes32) {
        return balanceProofDigest(proof.channelId, proof.amount);
    }

    /// @notice The EIP-712 digest of a cooperative close (same as `cooperativeCloseDigest`).
    function hashCooperativeClose(CooperativeClose calldata close) external view returns (bytes32) {
        return cooperativeCloseDigest(close.channelId, close.amount);
    }

    /// @notice The EIP-712 domain separator (chain id and this contract in it).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice The commission taken on a payment of `amount`.
    function commissionOn(uint256 amount) public view returns (uint256) {
        return amount * commissionBps / 10_000;
    }

    // ----- internals ----------------------------------------------------------------------

    /// Takes `amount` out of `user`'s free balance to go into a channel.
    function _fundFrom(address user, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        uint256 available = balanceOf[user];
        if (amount > available) revert InsufficientBalance(available, amount);
        balanceOf[user] = available - amount;
    }

    /// The signer of `digest`, from a 65-byte or an EIP-2098 64-byte signature; address(0) if
    /// the signature is malformed (never a channel party, so it fails as a bad signature).
    function _signer(bytes32 digest, bytes calldata signature) private pure returns (address signer) {
        if (signature.length == 64) {
            (signer,,) = ECDSA.tryRecover(digest, bytes32(signature[0:32]), bytes32(signature[32:64]));
        } else {
            (signer,,) = ECDSA.tryRecoverCalldata(digest, signature);
        }
    }

    function _existing(uint256 channelId) private view returns (Stored storage channel) {
        channel = channels[channelId];
        if (channel.status == Status.None) revert UnknownChannel(channelId);
    }

    function _open(uint256 channelId) private view returns (Stored storage channel) {
        channel = _existing(channelId);
        if (channel.status != Status.Open) revert NotOpen(channelId);
    }

    function _checkProof(uint256 channelId, Stored storage channel, uint256 amount, bytes calldata signature)
        private
        view
    {
        if (amount > channel.deposit) revert AmountAboveDeposit(channelId, channel.deposit, amount);
        if (_signer(balanceProofDigest(channelId, amount), signature) != channel.sender) {
            revert BadSignature(channelId);
        }
    }

    function _checkpoint(uint256 channelId, uint256 amount, bytes calldata senderSignature) private {
        Stored storage channel = _existing(channelId);
        if (channel.status != Status.Open && channel.status != Status.Closing) revert NotOpen(channelId);
        if (amount <= channel.claimed) revert AmountNotIncreasing(channelId, channel.claimed, amount);
        _checkProof(channelId, channel, amount, senderSignature);
        (uint256 paid, uint256 commission) = _pay(channel, amount);
        emit Checkpointed(channelId, amount, paid, commission);
    }

    /// Pays out of the channel what `amount` adds to what it paid: to the receiver less the
    /// commission on the cumulative amount, and that commission to the treasury (in one write
    /// when the treasury is the receiver; kept in the channel when it is the sender).
    function _pay(Stored storage channel, uint256 amount) private returns (uint256 paid, uint256 commission) {
        uint256 claimed = channel.claimed;
        // Amounts are at most the deposit (checked by every caller), so the cast keeps them.
        channel.claimed = uint96(amount);
        commission = commissionOn(amount) - commissionOn(claimed);
        paid = amount - claimed - commission;
        address receiver = channel.receiver;
        if (receiver == treasury) {
            balanceOf[receiver] += paid + commission;
            return (paid, commission);
        }
        balanceOf[receiver] += paid;
        if (commission > 0 && channel.sender != treasury) balanceOf[treasury] += commission;
    }

    function _settle(uint256 channelId, Stored storage channel, uint256 amount) private {
        if (amount > channel.deposit) revert AmountAboveDeposit(channelId, channel.deposit, amount);
        if (amount < channel.claimed) revert AmountBelowClaimed(channelId, channel.claimed, amount);
        // What the close pays is in `ChannelSettled` (its total): no `Checkpointed` beside it.
        if (amount > channel.claimed) _pay(channel, amount);
        uint256 claimed = channel.claimed;
        uint256 refund = refundOf(channelId);
        channel.status = Status.Settled;
        balanceOf[channel.sender] += refund;
        emit ChannelSettled(channelId, claimed, refund);
    }
}
