// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.t.sol";
import {IPSXToken} from "../src/IPSXToken.sol";
import {FundingSale} from "../src/FundingSale.sol";

contract TokenAndSaleTest is Base {
    uint256 internal constant START = 1_000_000;
    uint256 internal constant END = 2_000_000;
    uint256 internal constant CAP = 1_000 ether;

    address internal alice = address(0xA11CE);
    address internal bob = address(0xB0B);

    function setUp() public {
        vm.warp(START - 10);
        deploySale(START, END, CAP);
        vm.deal(alice, 10_000 ether);
        vm.deal(bob, 10_000 ether);
    }

    function contribute(address who, uint256 value) internal {
        vm.prank(who);
        sale.contribute{value: value}();
    }

    // ----- token ----------------------------------------------------------------------------

    function test_supply_is_fixed_and_allocated() public view {
        assertEq(token.totalSupply(), 1_800_000_000 ether, "supply");
        assertEq(token.decimals(), 18, "decimals");
        assertEq(token.balanceOf(address(sale)), 900_000_000 ether, "sale");
        assertEq(token.balanceOf(earlyAdopters), 495_000_000 ether, "early adopters");
        assertEq(token.balanceOf(bounty), 45_000_000 ether, "bounty");
        assertEq(token.balanceOf(team), 360_000_000 ether, "team");
    }

    function test_allocations_distribute_while_others_wait() public {
        vm.prank(bounty);
        require(token.transfer(alice, 5 ether), "bounty pays");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IPSXToken.TransfersLocked.selector, alice));
        token.transfer(bob, 1 ether);
    }

    function test_only_the_sale_enables_transfers_once() public {
        vm.expectRevert(IPSXToken.OnlySale.selector);
        token.enableTransfers();
        vm.warp(END);
        sale.finalize();
        assertTrue(token.transfersEnabled(), "enabled");
        vm.prank(address(sale));
        vm.expectRevert(IPSXToken.AlreadyEnabled.selector);
        token.enableTransfers();
    }

    function test_token_refuses_zero_allocation_addresses() public {
        vm.expectRevert(IPSXToken.ZeroAddress.selector);
        new IPSXToken(address(0), bounty, bounty, team);
    }

    function test_permit_sets_an_allowance_with_a_signature() public {
        uint256 key = 0xA11CE5;
        address owner = vm.addr(key);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                owner,
                bob,
                7 ether,
                token.nonces(owner),
                block.timestamp + 1
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        token.permit(owner, bob, 7 ether, block.timestamp + 1, v, r, s);
        assertEq(token.allowance(owner, bob), 7 ether, "allowance");
    }

    // ----- sale -----------------------------------------------------------------------------

    function test_sale_refuses_bad_schedules() public {
        vm.expectRevert(FundingSale.BadSchedule.selector);
        new FundingSale(treasury, earlyAdopters, bounty, team, 10, 10, CAP);
        vm.expectRevert(FundingSale.ZeroHardCap.selector);
        new FundingSale(treasury, earlyAdopters, bounty, team, 10, 20, 0);
        vm.expectRevert(FundingSale.ZeroAddress.selector);
        new FundingSale(payable(address(0)), earlyAdopters, bounty, team, 10, 20, CAP);
    }

    function test_contributions_only_while_open() public {
        vm.prank(alice);
        vm.expectRevert(FundingSale.NotOpen.selector);
        sale.contribute{value: 1 ether}();
        vm.warp(START);
        vm.prank(alice);
        vm.expectRevert(FundingSale.ZeroContribution.selector);
        sale.contribute{value: 0}();
        contribute(alice, 1 ether);
        vm.warp(END);
        vm.prank(alice);
        vm.expectRevert(FundingSale.NotOpen.selector);
        sale.contribute{value: 1 ether}();
    }

    function test_rate_is_fixed_by_the_hard_cap() public view {
        assertEq(sale.rate(), 900_000 ether, "900 M IPSX per 1,000 ETH");
    }

    function test_hitting_the_cap_mid_transaction_refunds_the_excess() public {
        vm.warp(START);
        contribute(alice, 600 ether);
        uint256 before = bob.balance;
        contribute(bob, 700 ether);
        assertEq(sale.contributionOf(bob), 400 ether, "accepted up to the cap");
        assertEq(before - bob.balance, 400 ether, "excess refunded");
        vm.prank(alice);
        vm.expectRevert(FundingSale.CapReached.selector);
        sale.contribute{value: 1 ether}();
        // Cap reached: finalize before the end.
        sale.finalize();
        assertEq(treasury.balance, CAP, "all ETH to the treasury");
        vm.prank(alice);
        sale.claim();
        vm.prank(bob);
        sale.claim();
        assertEq(token.balanceOf(alice), 540_000_000 ether, "600/1000 of 900 M");
        assertEq(token.balanceOf(bob), 360_000_000 ether, "400/1000 of 900 M");
    }

    function test_unsold_tokens_go_to_contributors_pro_rata() public {
        vm.warp(START);
        contribute(alice, 30 ether);
        contribute(bob, 10 ether);
        vm.expectRevert(FundingSale.NotFinished.selector);
        sale.finalize();
        vm.prank(alice);
        vm.expectRevert(FundingSale.NotFinalized.selector);
        sale.claim();
        vm.warp(END);
        sale.finalize();
        vm.expectRevert(FundingSale.AlreadyFinalized.selector);
        sale.finalize();
        vm.prank(alice);
        sale.claim();
        vm.prank(alice);
        vm.expectRevert(FundingSale.AlreadyClaimed.selector);
        sale.claim();
        vm.prank(treasury);
        vm.expectRevert(FundingSale.NothingToClaim.selector);
        sale.claim();
        vm.expectRevert(FundingSale.ClaimsOutstanding.selector);
        sale.sweepDust();
        vm.prank(bob);
        sale.claim();
        assertEq(token.balanceOf(alice), 675_000_000 ether, "3/4 of 900 M");
        assertEq(token.balanceOf(bob), 225_000_000 ether, "1/4 of 900 M");
        assertEq(treasury.balance, 40 ether, "ETH to the treasury");
        sale.sweepDust();
        assertEq(token.balanceOf(address(sale)), 0, "nothing left");
        // Transfers are open to everyone now.
        vm.prank(alice);
        require(token.transfer(bob, 1 ether), "transfer");
    }

    function test_with_no_contributor_the_treasury_gets_the_sale_allocation() public {
        vm.expectRevert(FundingSale.NotFinalized.selector);
        sale.sweepDust();
        vm.warp(END);
        sale.finalize();
        assertEq(token.balanceOf(treasury), 900_000_000 ether, "treasury");
        assertEq(treasury.balance, 0, "no ETH");
        assertEq(sale.entitlement(alice), 0, "nothing to claim");
    }

    function testFuzz_claims_are_pro_rata_and_never_exceed_the_allocation(uint96 a, uint96 b, uint96 c) public {
        vm.warp(START);
        address carol = address(0xCA401);
        vm.deal(carol, type(uint96).max);
        vm.deal(alice, type(uint96).max);
        vm.deal(bob, type(uint96).max);
        uint256[3] memory amounts = [bound(a, 1, 400 ether), bound(b, 1, 400 ether), bound(c, 1, 400 ether)];
        address[3] memory who = [alice, bob, carol];
        for (uint256 i = 0; i < 3; i++) {
            contribute(who[i], amounts[i]);
        }
        vm.warp(END);
        sale.finalize();
        uint256 total;
        for (uint256 i = 0; i < 3; i++) {
            vm.prank(who[i]);
            sale.claim();
            uint256 got = token.balanceOf(who[i]);
            assertEq(got, sale.contributionOf(who[i]) * 900_000_000 ether / sale.totalContributed(), "pro rata");
            total += got;
        }
        assertLe(total, 900_000_000 ether, "within the allocation");
        assertLe(900_000_000 ether - total, 3, "rounding dust at most a wei per claim");
    }
}
