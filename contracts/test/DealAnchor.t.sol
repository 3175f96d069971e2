// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Testing} from "./utils/Testing.sol";
import {DealAnchor} from "../src/DealAnchor.sol";

/// A tree the way the node builds one: leaves in order, each level pairs neighbours (hashed in
/// sorted order), an odd one out goes up as it is.
abstract contract Trees is Testing {
    function entry(uint64 deal, DealAnchor.EntryKind kind) internal pure returns (DealAnchor.DealEntry memory) {
        return DealAnchor.DealEntry({
            deal: deal,
            kind: kind,
            provider: address(uint160(0x1000 + deal)),
            requester: address(uint160(0x2000 + deal)),
            ips: 1,
            start: 1_700_000_000,
            end: 1_700_000_060,
            price: 1e15,
            at: 1_700_000_000 + deal,
            servedSeconds: kind == DealAnchor.EntryKind.Ended ? 60 : 0,
            amount: kind == DealAnchor.EntryKind.Ended ? 60e15 : 0,
            outcome: 0,
            stars: 0
        });
    }

    function leaf(DealAnchor.DealEntry memory e) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(e))));
    }

    function pair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    /// The root over `leaves`, and the proof of leaf `index`.
    function build(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32, bytes32[] memory) {
        bytes32[] memory proof = new bytes32[](32);
        uint256 depth;
        bytes32[] memory level = leaves;
        while (level.length > 1) {
            bytes32[] memory up = new bytes32[]((level.length + 1) / 2);
            for (uint256 i = 0; i < level.length; i += 2) {
                up[i / 2] = i + 1 < level.length ? pair(level[i], level[i + 1]) : level[i];
            }
            uint256 sibling = index ^ 1;
            if (sibling < level.length) proof[depth++] = level[sibling];
            index /= 2;
            level = up;
        }
        bytes32[] memory trimmed = new bytes32[](depth);
        for (uint256 i = 0; i < depth; i++) {
            trimmed[i] = proof[i];
        }
        return (level[0], trimmed);
    }
}

contract DealAnchorTest is Trees {
    address internal node = address(0x4E0DE);
    DealAnchor internal anchor;
    DealAnchor.DealEntry[] internal entries;
    bytes32[] internal leaves;

    function setUp() public {
        anchor = new DealAnchor(node);
        for (uint64 deal = 1; deal <= 7; deal++) {
            DealAnchor.DealEntry memory e = entry(deal, DealAnchor.EntryKind(deal % 4));
            entries.push(e);
            leaves.push(leaf(e));
        }
    }

    function test_every_entry_of_an_anchored_epoch_verifies() public {
        (bytes32 root,) = build(leaves, 0);
        vm.prank(node);
        anchor.anchor(1, root, uint32(leaves.length));
        for (uint256 i = 0; i < leaves.length; i++) {
            (, bytes32[] memory proof) = build(leaves, i);
            assertTrue(anchor.verify(1, entries[i], proof), "entry verifies");
            assertTrue(anchor.leafOf(entries[i]) == leaves[i], "same leaf on and off chain");
        }
    }

    function test_a_changed_entry_or_proof_or_epoch_does_not_verify() public {
        (bytes32 root, bytes32[] memory proof) = build(leaves, 2);
        vm.prank(node);
        anchor.anchor(1, root, uint32(leaves.length));
        DealAnchor.DealEntry memory lied = entries[2];
        lied.amount += 1;
        assertTrue(!anchor.verify(1, lied, proof), "another amount");
        lied = entries[2];
        lied.provider = address(0xBAD);
        assertTrue(!anchor.verify(1, lied, proof), "another provider");
        proof[0] = bytes32(uint256(proof[0]) ^ 1);
        assertTrue(!anchor.verify(1, entries[2], proof), "a tampered proof");
        (, proof) = build(leaves, 2);
        assertTrue(!anchor.verify(2, entries[2], proof), "an epoch never anchored");
        assertTrue(!anchor.verify(1, entry(99, DealAnchor.EntryKind.Made), proof), "a deal never anchored");
    }

    function test_only_the_node_anchors_epochs_in_order_once() public {
        (bytes32 root,) = build(leaves, 0);
        vm.expectRevert(abi.encodeWithSelector(DealAnchor.NotAnchorer.selector, address(this)));
        anchor.anchor(1, root, 7);
        vm.startPrank(node);
        vm.expectRevert(abi.encodeWithSelector(DealAnchor.WrongEpoch.selector, uint64(1), uint64(2)));
        anchor.anchor(2, root, 7);
        vm.expectRevert(DealAnchor.EmptyEpoch.selector);
        anchor.anchor(1, bytes32(0), 7);
        vm.expectRevert(DealAnchor.EmptyEpoch.selector);
        anchor.anchor(1, root, 0);
        anchor.anchor(1, root, 7);
        // Resent, or rewritten: refused, the root stays.
        vm.expectRevert(abi.encodeWithSelector(DealAnchor.WrongEpoch.selector, uint64(2), uint64(1)));
        anchor.anchor(1, keccak256("another history"), 7);
        vm.stopPrank();
        assertTrue(anchor.rootOf(1) == root, "an anchored root never changes");
        assertEq(anchor.epochs(), 1, "one epoch");
        vm.expectRevert(DealAnchor.ZeroAnchorer.selector);
        new DealAnchor(address(0));
    }
}

/// What anchoring an epoch costs as a transaction (see `CentralizerGas.t.sol`): the same
/// whatever the number of deals in it.
contract DealAnchorGasTest is Trees {
    event log_named_uint(string key, uint256 val);

    function test_gas_of_an_epoch() public {
        address node = address(0x4E0DE);
        DealAnchor anchor = new DealAnchor(node);
        vm.prank(node);
        anchor.anchor(1, keccak256("epoch 1"), 10_000);
        emit log_named_uint(
            "DealAnchor.anchor (the first epoch)",
            vm.lastCallGas().gasTotalUsed
        );
        vm.prank(node);
        anchor.anchor(2, keccak256("epoch 2"), 10_000);
        emit log_named_uint(
            "DealAnchor.anchor (an epoch of any size)",
            vm.lastCallGas().gasTotalUsed
        );
    }
}
