// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.t.sol";
import {Centralizer} from "../src/Centralizer.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// What a call cost, as a transaction: run with `forge test --isolate`, so each call below is
/// its own transaction (intrinsic 21,000 and calldata included, refunds taken off, cold storage
/// cold) — what a user pays. `scripts/gas-report.sh` runs this against the contracts of two
/// commits and prints the table; it reads the `log_named_uint` lines.
///
/// Only functions both the old and the new Centralizer have are called, so one file measures
/// both; what only the new one accepts (64-byte signatures) is tried and logged as 0 if refused.
contract CentralizerGasTest is Base {
    event log_named_uint(string key, uint256 val);

    uint256 internal constant SENDER_KEY = 0x5E7D;
    uint256 internal constant RECEIVER_KEY = 0x7EC1;
    address internal sender;
    address internal receiver;

    /// The Base treasury is a wallet of its own: in `test_gas_of_each_operation` it is neither
    /// party of any channel (the dearest case: a payment credits three wallets).
    function setUp() public {
        deployExchange();
        sender = vm.addr(SENDER_KEY);
        receiver = vm.addr(RECEIVER_KEY);
        depositFor(sender, 10_000 ether);
        // The receiver and the treasury hold balances already, as they would after a day of
        // trading: a payment to them updates a slot, it does not create one.
        depositFor(receiver, 1 ether);
        vm.prank(treasury);
        require(token.approve(address(centralizer), 1 ether), "approve");
        vm.prank(treasury);
        centralizer.deposit(1 ether);
    }

    function record(string memory what) internal {
        emit log_named_uint(what, vm.lastCallGas().gasTotalUsed);
    }

    function signed(uint256 key, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    /// EIP-2098: `s` with the parity of `v` in its top bit.
    function compact(uint256 key, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
    }

    function open(uint256 amount) internal returns (uint256 id) {
        vm.prank(sender);
        id = centralizer.openChannel(receiver, amount);
    }

    function checkpointed(uint256 amount, uint256 paid) internal returns (uint256 id) {
        id = open(amount);
        centralizer.checkpoint(id, paid, signed(SENDER_KEY, centralizer.balanceProofDigest(id, paid)));
    }

    function batch(uint256 channels) internal returns (uint256 gas) {
        uint256[] memory ids = new uint256[](channels);
        uint256[] memory amounts = new uint256[](channels);
        bytes[] memory signatures = new bytes[](channels);
        for (uint256 i = 0; i < channels; i++) {
            ids[i] = checkpointed(10 ether, 1 ether);
            amounts[i] = 2 ether;
            signatures[i] = signed(SENDER_KEY, centralizer.balanceProofDigest(ids[i], 2 ether));
        }
        centralizer.batchCheckpoint(ids, amounts, signatures);
        gas = vm.lastCallGas().gasTotalUsed;
    }

    /// The hub model: the node is the treasury, requesters pay it on channels to it, and it
    /// pays providers on channels from it.
    function test_gas_in_the_hub_model() public {
        uint256 hubKey = 0x4B;
        address node = vm.addr(hubKey);
        Centralizer hub = new Centralizer(IERC20(address(token)), node, COMMISSION_BPS, CHALLENGE);
        for (uint256 i = 0; i < 3; i++) {
            address who = i == 0 ? node : i == 1 ? sender : receiver;
            fund(who, 1_000 ether);
            vm.startPrank(who);
            token.approve(address(hub), 1_000 ether);
            hub.deposit(1_000 ether);
            vm.stopPrank();
        }
        // A requester (the sender here) pays the node.
        vm.prank(sender);
        uint256 inbound = hub.openChannel(node, 100 ether);
        hubCheckpoint(hub, SENDER_KEY, inbound, 10 ether);
        hubCheckpoint(hub, SENDER_KEY, inbound, 20 ether);
        record("checkpoint, requester to node (the receiver is the treasury)");
        // The node pays a provider (the receiver here).
        vm.prank(node);
        uint256 outbound = hub.openChannel(receiver, 100 ether);
        hubCheckpoint(hub, hubKey, outbound, 10 ether);
        hubCheckpoint(hub, hubKey, outbound, 20 ether);
        record("checkpoint, node to provider (the sender is the treasury)");
        bytes32 digest = hub.cooperativeCloseDigest(outbound, 30 ether);
        bytes memory byNode = signed(hubKey, digest);
        bytes memory byProvider = signed(RECEIVER_KEY, digest);
        hub.cooperativeClose(outbound, 30 ether, byNode, byProvider);
        record("cooperativeClose, node to provider");
    }

    function hubCheckpoint(Centralizer hub, uint256 key, uint256 id, uint256 amount) internal {
        bytes memory proof = signed(key, hub.balanceProofDigest(id, amount));
        hub.checkpoint(id, amount, proof);
    }

    function test_gas_of_each_operation() public {
        wallet();
        uint256 first = open(100 ether);
        record("openChannel (the contract's first)");
        uint256 id = open(100 ether);
        record("openChannel");
        vm.prank(sender);
        centralizer.topUp(id, 10 ether);
        record("topUp");
        checkpoints(id);
        batches();
        closes(id, first);
    }

    function wallet() internal {
        fund(sender, 100 ether);
        vm.prank(sender);
        require(token.approve(address(centralizer), 100 ether), "approve");
        vm.prank(sender);
        centralizer.deposit(100 ether);
        record("deposit");
        vm.prank(sender);
        centralizer.withdraw(1 ether);
        record("withdraw");
    }

    function checkpoints(uint256 id) internal {
        bytes memory toTen = signed(SENDER_KEY, centralizer.balanceProofDigest(id, 10 ether));
        centralizer.checkpoint(id, 10 ether, toTen);
        record("checkpoint, third-party treasury (first on the channel)");
        bytes memory toTwenty = signed(SENDER_KEY, centralizer.balanceProofDigest(id, 20 ether));
        centralizer.checkpoint(id, 20 ether, toTwenty);
        record("checkpoint, third-party treasury");
        bytes memory short = compact(SENDER_KEY, centralizer.balanceProofDigest(id, 30 ether));
        try centralizer.checkpoint(id, 30 ether, short) {
            record("checkpoint, third-party treasury, 64-byte signature");
        } catch {
            emit log_named_uint("checkpoint, third-party treasury, 64-byte signature", 0);
        }
    }

    function batches() internal {
        uint256 one = batch(1);
        emit log_named_uint("batchCheckpoint (1 channel)", one);
        uint256 eleven = batch(11);
        emit log_named_uint("batchCheckpoint (11 channels)", eleven);
        emit log_named_uint("batchCheckpoint (per channel after the first)", (eleven - one) / 10);
    }

    function closes(uint256 id, uint256 first) internal {
        bytes32 digest = centralizer.cooperativeCloseDigest(id, 40 ether);
        bytes memory bySender = signed(SENDER_KEY, digest);
        bytes memory byReceiver = signed(RECEIVER_KEY, digest);
        centralizer.cooperativeClose(id, 40 ether, bySender, byReceiver);
        record("cooperativeClose, third-party treasury");

        uint256 closing = checkpointed(100 ether, 10 ether);
        vm.prank(sender);
        centralizer.startClose(closing, 10 ether);
        record("startClose");
        vm.warp(block.timestamp + CHALLENGE);
        centralizer.settle(closing);
        record("settle (nothing more to pay)");

        uint256 challenged = checkpointed(100 ether, 10 ether);
        vm.prank(sender);
        centralizer.startClose(challenged, 15 ether);
        bytes memory toTwenty = signed(SENDER_KEY, centralizer.balanceProofDigest(challenged, 20 ether));
        centralizer.challenge(challenged, 20 ether, toTwenty);
        record("challenge");
        vm.warp(block.timestamp + CHALLENGE);
        centralizer.settle(challenged);
        record("settle (pays the rest)");

        bytes memory toFive = signed(SENDER_KEY, centralizer.balanceProofDigest(first, 5 ether));
        vm.prank(receiver);
        centralizer.receiverClose(first, 5 ether, toFive);
        record("receiverClose");
    }
}
