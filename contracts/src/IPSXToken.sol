// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title IPSX utility token
/// @notice Fixed supply of 1,800,000,000 IPSX (18 decimals), minted once at deployment:
///         900 M to the funding sale, 495 M to early adopters and strategic partners, 45 M to the
///         bounty programme, 360 M to the team and strategic partners. Nothing is ever minted
///         again. Until the sale completes, only the allocation holders can move tokens (so the
///         sale and the allocations can distribute); everyone else waits for `enableTransfers`,
///         which only the sale calls, once. ERC-2612 permit lets a deposit take one transaction.
contract IPSXToken is ERC20, ERC20Permit {
    uint256 public constant TOTAL_SUPPLY = 1_800_000_000 ether;
    uint256 public constant SALE_ALLOCATION = 900_000_000 ether;
    uint256 public constant EARLY_ADOPTERS_ALLOCATION = 495_000_000 ether;
    uint256 public constant BOUNTY_ALLOCATION = 45_000_000 ether;
    uint256 public constant TEAM_ALLOCATION = 360_000_000 ether;

    /// @notice The funding sale: holds the sale allocation and switches transfers on.
    address public immutable sale;
    address public immutable earlyAdopters;
    address public immutable bounty;
    address public immutable team;
    /// @notice Whether everyone may transfer (set once, when the sale completes).
    bool public transfersEnabled;

    event TransfersEnabled();

    error ZeroAddress();
    error OnlySale();
    error TransfersLocked(address from);
    error AlreadyEnabled();

    constructor(address sale_, address earlyAdopters_, address bounty_, address team_)
        ERC20("IPSX", "IPSX")
        ERC20Permit("IPSX")
    {
        if (sale_ == address(0) || earlyAdopters_ == address(0) || bounty_ == address(0) || team_ == address(0)) {
            revert ZeroAddress();
        }
        sale = sale_;
        earlyAdopters = earlyAdopters_;
        bounty = bounty_;
        team = team_;
        _mint(sale_, SALE_ALLOCATION);
        _mint(earlyAdopters_, EARLY_ADOPTERS_ALLOCATION);
        _mint(bounty_, BOUNTY_ALLOCATION);
        _mint(team_, TEAM_ALLOCATION);
        assert(totalSupply() == TOTAL_SUPPLY);
    }

    /// @notice Lets everyone transfer. Called by the sale when it is finalized.
    function enableTransfers() external {
        if (msg.sender != sale) revert OnlySale();
        if (transfersEnabled) revert AlreadyEnabled();
        transfersEnabled = true;
        emit TransfersEnabled();
    }

    /// @notice Whether `account` holds an allocation and may distribute before the sale ends.
    function isAllocationHolder(address account) public view returns (bool) {
        return account == sale || account == earlyAdopters || account == bounty || account == team;
    }

    function _update(address from, address to, uint256 value) internal override {
        if (!transfersEnabled && from != address(0) && !isAllocationHolder(from)) {
            revert TransfersLocked(from);
        }
        super._update(from, to, value);
    }
}
