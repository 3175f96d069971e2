// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Testing} from "./utils/Testing.sol";
import {IPSXToken} from "../src/IPSXToken.sol";
import {FundingSale} from "../src/FundingSale.sol";
import {Centralizer} from "../src/Centralizer.sol";

/// Shared set-up: a sale that ended with no contributor (so transfers are on and the treasury
/// holds the sale allocation), and a Centralizer with 2.5 % commission and a 1-day challenge.
abstract contract Base is Testing {
    address payable internal treasury = payable(address(0x7EA5));
    address internal earlyAdopters = address(0xEA);
    address internal bounty = address(0xB0);
    address internal team = address(0x7EA);

    FundingSale internal sale;
    IPSXToken internal token;
    Centralizer internal centralizer;

    uint16 internal constant COMMISSION_BPS = 250;
    uint64 internal constant CHALLENGE = 1 days;

    function deploySale(uint256 start, uint256 end, uint256 hardCap) internal {
        sale = new FundingSale(treasury, earlyAdopters, bounty, team, start, end, hardCap);
        token = sale.token();
    }

    function deployExchange() internal {
        deploySale(block.timestamp, block.timestamp + 1, 100 ether);
        vm.warp(block.timestamp + 1);
        sale.finalize();
        centralizer = new Centralizer(token, treasury, COMMISSION_BPS, CHALLENGE);
    }

    function fund(address user, uint256 amount) internal {
        vm.prank(treasury);
        require(token.transfer(user, amount), "fund");
    }

    function depositFor(address user, uint256 amount) internal {
        fund(user, amount);
        vm.startPrank(user);
        token.approve(address(centralizer), amount);
        centralizer.deposit(amount);
        vm.stopPrank();
    }

    function sign(uint256 key, bytes32 digest) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }
}
