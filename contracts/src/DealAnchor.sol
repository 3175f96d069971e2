// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @title IPSX deal anchor: the node's deal book, committed epoch by epoch
/// @notice The node that runs the market commits every change of its deal book — a deal made
///         with its terms, a provider ready, a deal ended with the seconds served and what they
///         cost, a rating — as the leaves of a Merkle tree, one root per epoch, in one
///         transaction whatever the number of deals. An anchored root never changes, and epochs
///         follow one another with no gap. Anyone holding an entry and its inclusion proof
///         (the node's API gives them to the parties) checks it here, with `verify`, or
///         offline against the root: a node that shows someone a history other than the one it
///         anchored is caught.
///
///         Leaves are hashed twice, `keccak256(bytes.concat(keccak256(abi.encode(entry))))`, so
///         no inner node of a tree can pass for a leaf; pairs are hashed in sorted order
///         (OpenZeppelin's `MerkleProof`), so a proof is just the siblings on the way up.
contract DealAnchor {
    /// @notice What changed in the deal book.
    enum EntryKind {
        Made,
        Ready,
        Ended,
        Rated
    }

    /// @notice One change of one deal. Fields a kind does not use are zero.
    struct DealEntry {
        uint64 deal;
        EntryKind kind;
        address provider;
        address requester;
        /// IPs leased.
        uint32 ips;
        /// The leased span, `[start, end)`, unix seconds.
        uint64 start;
        uint64 end;
        /// Price per IP-second, token base units.
        uint128 price;
        /// When the change happened (unix seconds).
        uint64 at;
        /// Ended: seconds served, and what they cost (ips x seconds x price).
        uint64 servedSeconds;
        uint128 amount;
        /// Ended: how (the engine's terminal status); Rated: 1 when the provider was rated, 2
        /// when the requester was.
        uint8 outcome;
        /// Rated: the stars given.
        uint8 stars;
    }

    /// @notice The only account that may anchor: the node's.
    address public immutable anchorer;
    /// @notice Epochs anchored so far; the next one is `epochs + 1`.
    uint64 public epochs;
    /// @notice The root of each anchored epoch (zero for one not anchored).
    mapping(uint64 => bytes32) public rootOf;

    event Anchored(uint64 indexed epoch, bytes32 root, uint32 entries);

    error ZeroAnchorer();
    error NotAnchorer(address caller);
    error WrongEpoch(uint64 expected, uint64 given);
    error EmptyEpoch();

    constructor(address anchorer_) {
        if (anchorer_ == address(0)) revert ZeroAnchorer();
        anchorer = anchorer_;
    }

    /// @notice Commits epoch `epoch`'s root over `entries` entries. Epochs come in order, once
    ///         each: a resent transaction for an epoch already anchored fails, it never
    ///         replaces a root.
    function anchor(uint64 epoch, bytes32 root, uint32 entries) external {
        if (msg.sender != anchorer) revert NotAnchorer(msg.sender);
        uint64 next = epochs + 1;
        if (epoch != next) revert WrongEpoch(next, epoch);
        if (root == bytes32(0) || entries == 0) revert EmptyEpoch();
        epochs = next;
        rootOf[epoch] = root;
        emit Anchored(epoch, root, entries);
    }

    /// @notice The leaf an entry is in a tree.
    function leafOf(DealEntry calldata entry) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(entry))));
    }

    /// @notice Whether `entry` is in epoch `epoch`'s anchored tree, by `proof` (the siblings
    ///         on the way up, as the node's API gives them).
    function verify(uint64 epoch, DealEntry calldata entry, bytes32[] calldata proof) external view returns (bool) {
        bytes32 root = rootOf[epoch];
        return root != bytes32(0) && MerkleProof.verifyCalldata(proof, root, leafOf(entry));
    }
}
