// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "../test/utils/Testing.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {FundingSale} from "../src/FundingSale.sol";
import {Centralizer} from "../src/Centralizer.sol";
import {DealAnchor} from "../src/DealAnchor.sol";

/// Deploys the sale (which deploys the token), the Centralizer and the deal anchor, and writes
/// their addresses to `deployments/<chain id>.json` for the Rust crates.
///
/// Settings come from the environment, with local-chain defaults: TREASURY, EARLY_ADOPTERS,
/// BOUNTY, TEAM (default: the deployer), SALE_START / SALE_END (default: a sale that has already
/// ended, so a local exchange can finalize it at once and move tokens), HARD_CAP (1,000 ETH),
/// COMMISSION_BPS (250 = 2.5 %), CHALLENGE_PERIOD (86,400 s), ANCHORER (the node that anchors the
/// deal book; default: the treasury, which the node is).
///
///   forge script script/Deploy.s.sol --rpc-url http://127.0.0.1:8545 --broadcast \
///       --private-key <deployer key>
contract Deploy {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    function run() external returns (FundingSale sale, Centralizer centralizer, DealAnchor anchor) {
        address deployer = msg.sender;
        address payable treasury = payable(vm.envOr("TREASURY", deployer));
        uint256 start = vm.envOr("SALE_START", block.timestamp > 2 ? block.timestamp - 2 : 0);
        uint256 end = vm.envOr("SALE_END", block.timestamp > 1 ? block.timestamp - 1 : 1);
        vm.startBroadcast();
        sale = new FundingSale(
            treasury,
            vm.envOr("EARLY_ADOPTERS", deployer),
            vm.envOr("BOUNTY", deployer),
            vm.envOr("TEAM", deployer),
            start,
            end,
            vm.envOr("HARD_CAP", uint256(1_000 ether))
        );
        if (block.timestamp >= end) sale.finalize();
        centralizer = new Centralizer(
            IERC20(address(sale.token())),
            treasury,
            uint16(vm.envOr("COMMISSION_BPS", uint256(250))),
            uint64(vm.envOr("CHALLENGE_PERIOD", uint256(1 days)))
        );
        anchor = new DealAnchor(vm.envOr("ANCHORER", address(treasury)));
        vm.stopBroadcast();
        string memory json = string.concat(
            "{\"chainId\":",
            vm.toString(block.chainid),
            ",\"token\":\"",
            vm.toString(address(sale.token())),
            "\",\"sale\":\"",
            vm.toString(address(sale)),
            "\",\"centralizer\":\"",
            vm.toString(address(centralizer)),
            "\",\"anchor\":\"",
            vm.toString(address(anchor)),
            "\",\"treasury\":\"",
            vm.toString(treasury),
            "\"}\n"
        );
        vm.createDir("deployments", true);
        vm.writeFile(string.concat("deployments/", vm.toString(block.chainid), ".json"), json);
    }
}
