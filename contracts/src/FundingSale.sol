// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {IPSXToken} from "./IPSXToken.sol";

/// @title IPSX funding sale
/// @notice ETH in, IPSX out. The rate is fixed before the sale by the hard cap:
///         900,000,000 IPSX / hardCap. Contributions are taken between `start` and `end` until the
///         cap is reached; a contribution that crosses the cap is accepted up to the cap and the
///         excess refunded in the same transaction. After `finalize` (at `end`, or as soon as the
///         cap is reached) every contributor claims contribution / total x 900 M IPSX: tokens not
///         sold at the rate go to the contributors pro rata. All ETH goes to the treasury at
///         finalize. If nobody contributed, the whole sale allocation goes to the treasury.
///         Finalizing switches token transfers on for everyone.
contract FundingSale is ReentrancyGuard {
    using SafeERC20 for IERC20;

    IPSXToken public immutable token;
    address payable public immutable treasury;
    uint256 public immutable start;
    uint256 public immutable end;
    uint256 public immutable hardCap;

    uint256 public totalContributed;
    uint256 public totalClaimedContributions;
    bool public finalized;
    mapping(address => uint256) public contributionOf;
    mapping(address => bool) public claimed;

    event Contributed(address indexed contributor, uint256 accepted, uint256 refunded);
    event Finalized(uint256 totalContributed, uint256 ethToTreasury);
    event Claimed(address indexed contributor, uint256 tokens);
    event DustSwept(uint256 tokens);

    error ZeroAddress();
    error BadSchedule();
    error ZeroHardCap();
    error NotOpen();
    error CapReached();
    error ZeroContribution();
    error NotFinished();
    error AlreadyFinalized();
    error NotFinalized();
    error NothingToClaim();
    error AlreadyClaimed();
    error ClaimsOutstanding();

    constructor(
        address payable treasury_,
        address earlyAdopters,
        address bounty,
        address team,
        uint256 start_,
        uint256 end_,
        uint256 hardCap_
    ) {
        if (treasury_ == address(0)) revert ZeroAddress();
        if (end_ <= start_) revert BadSchedule();
        if (hardCap_ == 0) revert ZeroHardCap();
        treasury = treasury_;
        start = start_;
        end = end_;
        hardCap = hardCap_;
        token = new IPSXToken(address(this), earlyAdopters, bounty, team);
    }

    /// @notice Tokens per wei at the predefined rate, scaled by 1e18 (900 M IPSX / hard cap).
    function rate() public view returns (uint256) {
        return token.SALE_ALLOCATION() * 1e18 / hardCap;
    }

    /// @notice Contribute ETH. Above the cap, the excess is sent back.
    function contribute() external payable nonReentrant {
        if (block.timestamp < start || block.timestamp >= end || finalized) revert NotOpen();
        if (msg.value == 0) revert ZeroContribution();
        uint256 room = hardCap - totalContributed;
        if (room == 0) revert CapReached();
        uint256 accepted = msg.value < room ? msg.value : room;
        uint256 refund = msg.value - accepted;
        contributionOf[msg.sender] += accepted;
        totalContributed += accepted;
        emit Contributed(msg.sender, accepted, refund);
        if (refund > 0) Address.sendValue(payable(msg.sender), refund);
    }

    /// @notice Close the sale once it ended or the cap was reached; ETH goes to the treasury.
    function finalize() external nonReentrant {
        if (finalized) revert AlreadyFinalized();
        if (block.timestamp < end && totalContributed < hardCap) revert NotFinished();
        finalized = true;
        uint256 raised = address(this).balance;
        emit Finalized(totalContributed, raised);
        token.enableTransfers();
        if (totalContributed == 0) {
            IERC20(address(token)).safeTransfer(treasury, token.balanceOf(address(this)));
        }
        if (raised > 0) Address.sendValue(treasury, raised);
    }

    /// @notice What `contributor` receives: contribution / total x 900 M IPSX.
    function entitlement(address contributor) public view returns (uint256) {
        if (totalContributed == 0) return 0;
        return contributionOf[contributor] * token.SALE_ALLOCATION() / totalContributed;
    }

    /// @notice Claim your tokens after finalize.
    function claim() external nonReentrant {
        if (!finalized) revert NotFinalized();
        if (claimed[msg.sender]) revert AlreadyClaimed();
        uint256 tokens = entitlement(msg.sender);
        if (tokens == 0) revert NothingToClaim();
        claimed[msg.sender] = true;
        totalClaimedContributions += contributionOf[msg.sender];
        emit Claimed(msg.sender, tokens);
        IERC20(address(token)).safeTransfer(msg.sender, tokens);
    }

    /// @notice Once every contributor has claimed, rounding dust goes to the treasury.
    function sweepDust() external nonReentrant {
        if (!finalized) revert NotFinalized();
        if (totalClaimedContributions != totalContributed) revert ClaimsOutstanding();
        uint256 dust = token.balanceOf(address(this));
        emit DustSwept(dust);
        if (dust > 0) IERC20(address(token)).safeTransfer(treasury, dust);
    }
}
