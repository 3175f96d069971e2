// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Base} from "./Base.t.sol";
import {Centralizer} from "../src/Centralizer.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

contract CentralizerTest is Base {
    uint256 internal constant SENDER_KEY = 0x5E7D;
    uint256 internal constant RECEIVER_KEY = 0x7EC1;
    address internal sender;
    address internal receiver;

    function setUp() public {
        deployExchange();
        sender = vm.addr(SENDER_KEY);
        receiver = vm.addr(RECEIVER_KEY);
        depositFor(sender, 1_000 ether);
    }

    function open(uint256 amount) internal returns (uint256 id) {
        vm.prank(sender);
        id = centralizer.openChannel(receiver, amount);
    }

    function proof(uint256 id, uint256 amount) internal returns (bytes memory) {
        return sign(SENDER_KEY, centralizer.balanceProofDigest(id, amount));
    }

    // ----- wallet ---------------------------------------------------------------------------

    function test_deposit_and_withdraw_move_free_balance() public {
        assertEq(centralizer.balanceOf(sender), 1_000 ether, "deposited");
        vm.prank(sender);
        centralizer.withdraw(400 ether);
        assertEq(centralizer.balanceOf(sender), 600 ether, "left");
        assertEq(token.balanceOf(sender), 400 ether, "back in the wallet");
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.InsufficientBalance.selector, 600 ether, 601 ether));
        centralizer.withdraw(601 ether);
        vm.prank(sender);
        vm.expectRevert(Centralizer.ZeroAmount.selector);
        centralizer.withdraw(0);
        vm.prank(sender);
        vm.expectRevert(Centralizer.ZeroAmount.selector);
        centralizer.deposit(0);
    }

    function test_deposit_with_permit_takes_one_transaction() public {
        uint256 key = 0xBEEF;
        address user = vm.addr(key);
        fund(user, 50 ether);
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                user,
                address(centralizer),
                50 ether,
                token.nonces(user),
                block.timestamp + 60
            )
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        vm.prank(user);
        centralizer.depositWithPermit(50 ether, block.timestamp + 60, v, r, s);
        assertEq(centralizer.balanceOf(user), 50 ether, "deposited by permit");
    }

    function test_constructor_caps_commission() public {
        vm.expectRevert(abi.encodeWithSelector(Centralizer.CommissionTooHigh.selector, uint16(1_001)));
        new Centralizer(IERC20(address(token)), treasury, 1_001, CHALLENGE);
        vm.expectRevert(Centralizer.ZeroAddress.selector);
        new Centralizer(IERC20(address(token)), address(0), 1, CHALLENGE);
    }

    // ----- channels -------------------------------------------------------------------------

    function test_open_and_top_up_reserve_from_the_balance() public {
        uint256 id = open(100 ether);
        assertEq(id, 1, "first id");
        assertEq(centralizer.refundOf(id), 100 ether, "held in the channel");
        assertEq(centralizer.balanceOf(sender), 900 ether, "free");
        vm.prank(sender);
        centralizer.topUp(id, 50 ether);
        assertEq(centralizer.getChannel(id).deposit, 150 ether, "topped up");
        vm.prank(receiver);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.NotSender.selector, id));
        centralizer.topUp(id, 1 ether);
        vm.prank(sender);
        vm.expectRevert(Centralizer.SelfChannel.selector);
        centralizer.openChannel(sender, 1 ether);
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.InsufficientBalance.selector, 850 ether, 851 ether));
        centralizer.openChannel(receiver, 851 ether);
        assertEq(open(1 ether), 2, "ids never repeat");
    }

    function test_checkpoint_pays_the_difference_less_commission_and_stays_open() public {
        uint256 id = open(100 ether);
        centralizer.checkpoint(id, 40 ether, proof(id, 40 ether));
        assertEq(centralizer.balanceOf(receiver), 39 ether, "40 less 2.5 %");
        assertEq(centralizer.balanceOf(treasury), 1 ether, "commission");
        assertEq(centralizer.refundOf(id), 60 ether, "what the channel still holds for the sender");
        centralizer.checkpoint(id, 50 ether, proof(id, 50 ether));
        assertEq(centralizer.balanceOf(receiver), 48.75 ether, "only the difference");
        bytes memory again = proof(id, 50 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.AmountNotIncreasing.selector, id, 50 ether, 50 ether));
        centralizer.checkpoint(id, 50 ether, again);
        bytes memory tooMuch = proof(id, 101 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.AmountAboveDeposit.selector, id, 100 ether, 101 ether));
        centralizer.checkpoint(id, 101 ether, tooMuch);
        bytes memory forged = sign(RECEIVER_KEY, centralizer.balanceProofDigest(id, 60 ether));
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 60 ether, forged);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.UnknownChannel.selector, 99));
        centralizer.checkpoint(99, 1, forged);
        assertTrue(centralizer.getChannel(id).status == Centralizer.Status.Open, "still open");
    }

    function test_batch_checkpoint_settles_many_channels_in_one_transaction() public {
        uint256[] memory ids = new uint256[](3);
        uint256[] memory amounts = new uint256[](3);
        bytes[] memory signatures = new bytes[](3);
        for (uint256 i = 0; i < 3; i++) {
            ids[i] = open(10 ether);
            amounts[i] = (i + 1) * 1 ether;
            signatures[i] = proof(ids[i], amounts[i]);
        }
        centralizer.batchCheckpoint(ids, amounts, signatures);
        assertEq(centralizer.balanceOf(receiver), 6 ether - centralizer.commissionOn(1 ether) * 6, "sum less commission");
        vm.expectRevert(Centralizer.LengthMismatch.selector);
        centralizer.batchCheckpoint(ids, new uint256[](2), signatures);
    }

    function test_cooperative_close_is_immediate_with_both_signatures() public {
        uint256 id = open(100 ether);
        bytes32 digest = centralizer.cooperativeCloseDigest(id, 30 ether);
        centralizer.cooperativeClose(id, 30 ether, sign(SENDER_KEY, digest), sign(RECEIVER_KEY, digest));
        assertEq(centralizer.balanceOf(receiver), 30 ether - centralizer.commissionOn(30 ether), "paid");
        assertEq(centralizer.balanceOf(sender), 970 ether, "rest refunded");
        assertEq(centralizer.refundOf(id), 0, "nothing left in a settled channel");
        bytes memory late = proof(id, 40 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.NotOpen.selector, id));
        centralizer.checkpoint(id, 40 ether, late);
    }

    function test_a_balance_proof_never_passes_as_a_closing_signature() public {
        uint256 id = open(100 ether);
        bytes memory senderProof = proof(id, 30 ether);
        bytes memory receiverProof = sign(RECEIVER_KEY, centralizer.balanceProofDigest(id, 30 ether));
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.cooperativeClose(id, 30 ether, senderProof, receiverProof);
        // Nor the other way round.
        bytes memory closing = sign(SENDER_KEY, centralizer.cooperativeCloseDigest(id, 30 ether));
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 30 ether, closing);
    }

    function test_proofs_do_not_replay_across_channels_chains_or_contracts() public {
        uint256 first = open(10 ether);
        uint256 second = open(10 ether);
        bytes memory forFirst = proof(first, 5 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, second));
        centralizer.checkpoint(second, 5 ether, forFirst);

        Centralizer other = new Centralizer(IERC20(address(token)), treasury, COMMISSION_BPS, CHALLENGE);
        depositFor(sender, 10 ether);
        vm.prank(sender);
        centralizer.withdraw(10 ether);
        vm.startPrank(sender);
        token.approve(address(other), 10 ether);
        other.deposit(10 ether);
        uint256 mirrored = other.openChannel(receiver, 10 ether);
        vm.stopPrank();
        assertEq(mirrored, first, "same id on the other contract");
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, first));
        other.checkpoint(first, 5 ether, forFirst);

        vm.chainId(999);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, first));
        centralizer.checkpoint(first, 5 ether, forFirst);
    }

    function test_typed_digests_match_the_signed_structs() public view {
        assertEq(
            centralizer.hashBalanceProof(Centralizer.BalanceProof({channelId: 7, amount: 3 ether})),
            centralizer.balanceProofDigest(7, 3 ether),
            "balance proof"
        );
        assertEq(
            centralizer.hashCooperativeClose(Centralizer.CooperativeClose({channelId: 7, amount: 3 ether})),
            centralizer.cooperativeCloseDigest(7, 3 ether),
            "cooperative close"
        );
        assertTrue(
            centralizer.balanceProofDigest(7, 3 ether) != centralizer.cooperativeCloseDigest(7, 3 ether),
            "distinct meanings"
        );
    }

    function test_malleable_signatures_are_refused() public {
        uint256 id = open(10 ether);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SENDER_KEY, centralizer.balanceProofDigest(id, 5 ether));
        uint256 n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
        bytes32 highS = bytes32(n - uint256(s));
        uint8 flipped = v == 27 ? 28 : 27;
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 5 ether, abi.encodePacked(r, highS, flipped));
    }

    /// EIP-2098: `s` with `v`'s parity in its top bit, 64 bytes in all.
    function compactProof(uint256 id, uint256 amount) internal returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(SENDER_KEY, centralizer.balanceProofDigest(id, amount));
        return abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
    }

    function test_commission_is_on_the_cumulative_amount_however_it_was_split() public {
        // 2.5 % of 1 wei is 0 and of 39 wei is 0: per checkpoint, a receiver could claim wei by
        // wei and never pay commission. On the cumulative amount it pays what one claim would.
        uint256 id = open(100 ether);
        uint256 claimed;
        for (uint256 step = 1; step <= 50; step++) {
            claimed += 39;
            centralizer.checkpoint(id, claimed, proof(id, claimed));
        }
        assertEq(centralizer.balanceOf(treasury), centralizer.commissionOn(claimed), "commission on the total");
        assertEq(centralizer.balanceOf(receiver), claimed - centralizer.commissionOn(claimed), "the rest paid");
    }

    /// A Centralizer whose treasury is `hubTreasury`, and a 100-ether channel on it from the
    /// sender to the receiver.
    function hubWith(address hubTreasury) internal returns (Centralizer hub, uint256 id) {
        hub = new Centralizer(IERC20(address(token)), hubTreasury, COMMISSION_BPS, CHALLENGE);
        fund(sender, 100 ether);
        vm.startPrank(sender);
        token.approve(address(hub), 100 ether);
        hub.deposit(100 ether);
        id = hub.openChannel(receiver, 100 ether);
        vm.stopPrank();
    }

    function test_a_treasury_that_receives_is_paid_its_commission_with_the_payment() public {
        (Centralizer hub, uint256 id) = hubWith(receiver);
        bytes memory signed = sign(SENDER_KEY, hub.balanceProofDigest(id, 40 ether));
        vm.expectEmit(true, true, true, true);
        emit Checkpointed(id, 40 ether, 39 ether, 1 ether);
        hub.checkpoint(id, 40 ether, signed);
        assertEq(hub.balanceOf(receiver), 40 ether, "paid and commission, both its own");
        assertEq(hub.refundOf(id), 60 ether, "the rest stays for the sender");
    }

    function test_a_treasury_that_sends_keeps_its_commission_in_the_channel() public {
        (Centralizer hub, uint256 id) = hubWith(sender);
        hub.checkpoint(id, 40 ether, sign(SENDER_KEY, hub.balanceProofDigest(id, 40 ether)));
        assertEq(hub.balanceOf(receiver), 39 ether, "the provider is paid less commission");
        assertEq(hub.balanceOf(sender), 0, "nothing comes back before the channel settles");
        assertEq(hub.refundOf(id), 61 ether, "the unclaimed 60 and the commission kept");
        vm.prank(receiver);
        hub.receiverClose(id, 0, "");
        assertEq(hub.balanceOf(sender), 61 ether, "back to the treasury when it settles");
        assertEq(token.balanceOf(address(hub)), hub.balanceOf(sender) + hub.balanceOf(receiver), "conserved");
    }

    function test_a_64_byte_signature_pays_like_a_65_byte_one() public {
        uint256 id = open(100 ether);
        centralizer.checkpoint(id, 40 ether, compactProof(id, 40 ether));
        assertEq(centralizer.balanceOf(receiver), 39 ether, "40 less 2.5 %");
        // The same proof signed by someone else, or cut short, is a bad signature.
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(RECEIVER_KEY, centralizer.balanceProofDigest(id, 50 ether));
        bytes memory forged = abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 50 ether, forged);
        bytes memory full = proof(id, 50 ether);
        bytes memory cut = new bytes(63);
        for (uint256 i = 0; i < 63; i++) {
            cut[i] = full[i];
        }
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 50 ether, cut);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.BadSignature.selector, id));
        centralizer.checkpoint(id, 50 ether, "");
        assertEq(centralizer.getChannel(id).claimed, 40 ether, "nothing more paid");
    }

    function test_a_channel_holds_at_most_max_deposit() public {
        uint256 max = centralizer.MAX_DEPOSIT();
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.DepositTooLarge.selector, max + 1, max));
        centralizer.openChannel(receiver, max + 1);
        uint256 id = open(10 ether);
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.DepositTooLarge.selector, max + 1, max));
        centralizer.topUp(id, max + 1 - 10 ether);
        assertEq(centralizer.getChannel(id).deposit, 10 ether, "unchanged");
    }

    function test_a_stale_unilateral_close_is_answered_with_the_newest_proof() public {
        uint256 id = open(100 ether);
        bytes memory newest = proof(id, 70 ether);
        centralizer.checkpoint(id, 20 ether, proof(id, 20 ether));
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.AmountBelowClaimed.selector, id, 20 ether, 10 ether));
        centralizer.startClose(id, 10 ether);
        vm.prank(sender);
        centralizer.startClose(id, 30 ether);
        vm.expectRevert(
            abi.encodeWithSelector(Centralizer.ChallengePeriodRunning.selector, id, uint64(block.timestamp + CHALLENGE))
        );
        centralizer.settle(id);
        bytes memory older = proof(id, 25 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.AmountNotIncreasing.selector, id, 30 ether, 25 ether));
        centralizer.challenge(id, 25 ether, older);
        centralizer.challenge(id, 70 ether, newest);
        vm.warp(block.timestamp + CHALLENGE);
        bytes memory tooLate = proof(id, 80 ether);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.ChallengePeriodOver.selector, id));
        centralizer.challenge(id, 80 ether, tooLate);
        centralizer.settle(id);
        assertEq(centralizer.balanceOf(receiver), 70 ether - centralizer.commissionOn(70 ether), "paid to 70");
        assertEq(centralizer.balanceOf(sender), 930 ether, "30 back");
        vm.expectRevert(abi.encodeWithSelector(Centralizer.NotClosing.selector, id));
        centralizer.settle(id);
    }

    function test_the_receiver_can_close_at_once() public {
        uint256 id = open(100 ether);
        vm.prank(sender);
        vm.expectRevert(abi.encodeWithSelector(Centralizer.NotReceiver.selector, id));
        centralizer.receiverClose(id, 0, "");
        bytes memory signed = proof(id, 45 ether);
        vm.prank(receiver);
        centralizer.receiverClose(id, 45 ether, signed);
        assertEq(centralizer.balanceOf(receiver), 45 ether - centralizer.commissionOn(45 ether), "paid");
        assertEq(centralizer.balanceOf(sender), 955 ether, "refund");
        assertTrue(centralizer.getChannel(id).status == Centralizer.Status.Settled, "settled");
    }

    function testFuzz_nobody_is_paid_beyond_what_was_signed(uint96 signed, uint96 deposit) public {
        uint256 amount = bound(deposit, 1, 1_000 ether);
        uint256 id = open(amount);
        uint256 pay = bound(signed, 1, amount);
        centralizer.checkpoint(id, pay, proof(id, pay));
        vm.prank(sender);
        centralizer.startClose(id, pay);
        vm.warp(block.timestamp + CHALLENGE);
        centralizer.settle(id);
        uint256 received = centralizer.balanceOf(receiver) + centralizer.balanceOf(treasury);
        assertEq(received, pay, "receiver + commission = signed");
        assertEq(centralizer.balanceOf(sender), 1_000 ether - pay, "sender keeps the rest");
        uint256 owed = centralizer.balanceOf(sender) + centralizer.balanceOf(receiver) + centralizer.balanceOf(treasury);
        assertEq(token.balanceOf(address(centralizer)), owed, "tokens held = what is owed");
    }

    event Checkpointed(uint256 indexed channelId, uint256 amount, uint256 paidToReceiver, uint256 commission);
    event ChannelOpened(uint256 indexed channelId, address indexed sender, address indexed receiver, uint256 deposit);
    event ChannelSettled(uint256 indexed channelId, uint256 totalPaid, uint256 refunded);

    function test_state_changes_emit_what_a_watcher_needs() public {
        vm.expectEmit(true, true, true, true);
        emit ChannelOpened(1, sender, receiver, 10 ether);
        uint256 id = open(10 ether);
        bytes memory signed = proof(id, 4 ether);
        vm.expectEmit(true, true, true, true);
        emit Checkpointed(id, 4 ether, 3.9 ether, 0.1 ether);
        centralizer.checkpoint(id, 4 ether, signed);
        vm.expectEmit(true, true, true, true);
        emit ChannelSettled(id, 4 ether, 6 ether);
        vm.prank(receiver);
        centralizer.receiverClose(id, 0, "");
        vm.prank(sender);
        vm.expectRevert(Centralizer.ZeroAddress.selector);
        centralizer.openChannel(address(0), 1 ether);
    }
}
