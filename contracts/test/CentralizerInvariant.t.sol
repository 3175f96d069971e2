// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.t.sol";
import {Testing} from "./utils/Testing.sol";
import {Centralizer} from "../src/Centralizer.sol";
import {IPSXToken} from "../src/IPSXToken.sol";

/// Drives random deposits, opens, top-ups, signed proofs, checkpoints, closes of every kind and
/// withdrawals, and keeps ghost records of what senders authorised.
contract Handler is Testing {
    Centralizer internal immutable centralizer;
    IPSXToken internal immutable token;
    uint256[3] internal keys = [uint256(0xA1), 0xB2, 0xC3];
    address[] public users;

    uint256 public deposited;
    uint256 public withdrawn;
    /// Highest amount each channel's sender authorised (signed or admitted on chain).
    mapping(uint256 => uint256) public authorised;
    mapping(uint256 => bool) public seenSettled;

    constructor(Centralizer centralizer_, IPSXToken token_, address funder) {
        centralizer = centralizer_;
        token = token_;
        for (uint256 i = 0; i < 3; i++) {
            users.push(vm.addr(keys[i]));
            vm.prank(funder);
            require(token.transfer(users[i], 1_000_000 ether), "fund");
            vm.prank(users[i]);
            token.approve(address(centralizer), type(uint256).max);
        }
        // The treasury may be one of the signing users (then channels it sends on keep their
        // commission) or a wallet of its own (then it only withdraws).
        address treasury = centralizer_.treasury();
        if (treasury != users[0]) users.push(treasury);
    }

    function userCount() external view returns (uint256) {
        return users.length;
    }

    function _channel(uint256 seed) internal view returns (uint256 id, Centralizer.Channel memory channel) {
        uint256 count = centralizer.channelCount();
        if (count == 0) return (0, channel);
        id = 1 + seed % count;
        channel = centralizer.getChannel(id);
    }

    function _key(address user) internal view returns (uint256) {
        for (uint256 i = 0; i < 3; i++) {
            if (users[i] == user) return keys[i];
        }
        return 0;
    }

    function _sign(uint256 key, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function deposit(uint256 who, uint256 amount) external {
        address user = users[who % 3];
        amount = bound(amount, 1, 10_000 ether);
        vm.prank(user);
        centralizer.deposit(amount);
        deposited += amount;
    }

    function withdraw(uint256 who, uint256 amount) external {
        address user = users[who % 4];
        uint256 free = centralizer.balanceOf(user);
        if (free == 0) return;
        amount = bound(amount, 1, free);
        vm.prank(user);
        centralizer.withdraw(amount);
        withdrawn += amount;
    }

    function open(uint256 from, uint256 to, uint256 amount) external {
        address sender = users[from % 3];
        address receiver = users[(from % 3 + 1 + to % 2) % 3];
        uint256 free = centralizer.balanceOf(sender);
        if (free == 0) return;
        vm.prank(sender);
        centralizer.openChannel(receiver, bound(amount, 1, free));
    }

    function topUp(uint256 seed, uint256 amount) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status != Centralizer.Status.Open) return;
        uint256 free = centralizer.balanceOf(channel.sender);
        if (free == 0) return;
        vm.prank(channel.sender);
        centralizer.topUp(id, bound(amount, 1, free));
    }

    function checkpoint(uint256 seed, uint256 amount) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status == Centralizer.Status.Settled || channel.claimed >= channel.deposit) return;
        amount = bound(amount, channel.claimed + 1, channel.deposit);
        bytes memory signature = _sign(_key(channel.sender), centralizer.balanceProofDigest(id, amount));
        if (amount > authorised[id]) authorised[id] = amount;
        centralizer.checkpoint(id, amount, signature);
    }

    function startClose(uint256 seed, uint256 amount) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status != Centralizer.Status.Open) return;
        amount = bound(amount, channel.claimed, channel.deposit);
        if (amount > authorised[id]) authorised[id] = amount;
        vm.prank(channel.sender);
        centralizer.startClose(id, amount);
    }

    function challenge(uint256 seed, uint256 amount) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status != Centralizer.Status.Closing) return;
        if (block.timestamp >= channel.closeDeadline || channel.closingAmount >= channel.deposit) return;
        amount = bound(amount, channel.closingAmount + 1, channel.deposit);
        bytes memory signature = _sign(_key(channel.sender), centralizer.balanceProofDigest(id, amount));
        if (amount > authorised[id]) authorised[id] = amount;
        centralizer.challenge(id, amount, signature);
    }

    function settle(uint256 seed, uint256 wait) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status != Centralizer.Status.Closing) return;
        vm.warp(block.timestamp + bound(wait, 0, 2 days));
        if (block.timestamp < channel.closeDeadline) return;
        centralizer.settle(id);
        seenSettled[id] = true;
    }

    function cooperativeClose(uint256 seed, uint256 amount) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status == Centralizer.Status.Settled) return;
        uint256 floor = channel.claimed;
        amount = bound(amount, floor, channel.deposit);
        bytes32 digest = centralizer.cooperativeCloseDigest(id, amount);
        bytes memory bySender = _sign(_key(channel.sender), digest);
        bytes memory byReceiver = _sign(_key(channel.receiver), digest);
        if (amount > authorised[id]) authorised[id] = amount;
        centralizer.cooperativeClose(id, amount, bySender, byReceiver);
        seenSettled[id] = true;
    }

    function receiverClose(uint256 seed) external {
        (uint256 id, Centralizer.Channel memory channel) = _channel(seed);
        if (id == 0 || channel.status == Centralizer.Status.Settled) return;
        vm.prank(channel.receiver);
        centralizer.receiverClose(id, 0, "");
        seenSettled[id] = true;
    }
}

contract CentralizerInvariantTest is Base {
    Handler internal handler;

    function setUp() public {
        deployExchange();
        // The first signing user is the treasury, as the node is in the hub model: channels
        // it sends on, receives on, and channels between others are all driven.
        address hub = vm.addr(0xA1);
        centralizer = new Centralizer(token, hub, COMMISSION_BPS, CHALLENGE);
        handler = new Handler(centralizer, token, treasury);
    }

    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// Tokens conserved: what the contract holds = everyone's free balance + what unsettled
    /// channels would return to their senders = deposits - withdrawals (payments and
    /// commission only move amounts between wallets and channels).
    function invariant_tokens_are_conserved() public view {
        uint256 sum;
        for (uint256 i = 0; i < handler.userCount(); i++) {
            address user = handler.users(i);
            sum += centralizer.balanceOf(user);
        }
        for (uint256 id = 1; id <= centralizer.channelCount(); id++) {
            sum += centralizer.refundOf(id);
        }
        uint256 held = token.balanceOf(address(centralizer));
        assertEq(sum, held, "balances + reserved = held");
        assertEq(held, handler.deposited() - handler.withdrawn(), "deposits - withdrawals");
    }

    /// Nobody paid beyond what the sender authorised; no channel beyond its deposit; settled
    /// channels stay settled.
    function invariant_channels_pay_only_what_was_signed() public view {
        for (uint256 id = 1; id <= centralizer.channelCount(); id++) {
            Centralizer.Channel memory channel = centralizer.getChannel(id);
            assertLe(channel.claimed, handler.authorised(id), "paid beyond authorised");
            assertLe(channel.claimed, channel.deposit, "paid beyond deposit");
            if (handler.seenSettled(id)) {
                assertTrue(channel.status == Centralizer.Status.Settled, "settled stays settled");
            }
        }
    }
}
