// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// Foundry cheatcodes used by these tests (the HEVM cheatcode address answers them whatever
/// library declares them; forge-std's current release is not on the package registries reached
/// here, so the few we need are declared here).
/// What the last call cost (forge's `lastCallGas`); under `forge test --isolate` the call is its
/// own transaction, so `gasTotalUsed` is what a user pays: intrinsic gas and calldata included,
/// refunds taken off.
struct Gas {
    uint64 gasLimit;
    uint64 gasTotalUsed;
    uint64 gasMemoryUsed;
    int64 gasRefunded;
    uint64 gasRemaining;
}

interface Vm {
    function lastCallGas() external view returns (Gas memory);
    function warp(uint256) external;
    function chainId(uint256) external;
    function sign(uint256 privateKey, bytes32 digest) external returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external returns (address);
    function prank(address) external;
    function startPrank(address) external;
    function stopPrank() external;
    function deal(address, uint256) external;
    function expectRevert(bytes calldata) external;
    function expectRevert(bytes4) external;
    function expectRevert() external;
    function expectEmit(bool, bool, bool, bool) external;
    function assume(bool) external;
    function label(address, string calldata) external;
    function envOr(string calldata name, uint256 defaultValue) external view returns (uint256);
    function envOr(string calldata name, address defaultValue) external view returns (address);
    function envOr(string calldata name, string calldata defaultValue) external view returns (string memory);
    function startBroadcast() external;
    function startBroadcast(uint256 privateKey) external;
    function stopBroadcast() external;
    function writeFile(string calldata path, string calldata data) external;
    function toString(address) external pure returns (string memory);
    function toString(uint256) external pure returns (string memory);
    function createDir(string calldata path, bool recursive) external;
}

/// Assertions that revert with a message (a reverting test is a failing test).
abstract contract Testing {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    function makeAddr(string memory name) internal returns (address account) {
        account = vm.addr(uint256(keccak256(bytes(name))));
        vm.label(account, name);
    }

    function assertTrue(bool condition, string memory message) internal pure {
        require(condition, message);
    }

    function assertEq(uint256 left, uint256 right, string memory message) internal pure {
        if (left != right) {
            revert(string.concat(message, ": ", _str(left), " != ", _str(right)));
        }
    }

    function assertEq(address left, address right, string memory message) internal pure {
        require(left == right, message);
    }

    function assertEq(bytes32 left, bytes32 right, string memory message) internal pure {
        require(left == right, message);
    }

    function assertLe(uint256 left, uint256 right, string memory message) internal pure {
        if (left > right) {
            revert(string.concat(message, ": ", _str(left), " > ", _str(right)));
        }
    }

    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        require(min <= max, "bound: min > max");
        if (x >= min && x <= max) return x;
        return min + (x % (max - min + 1));
    }

    function _str(uint256 value) private pure returns (string memory) {
        if (value == 0) return "0";
        bytes memory digits;
        while (value > 0) {
            digits = abi.encodePacked(bytes1(uint8(48 + value % 10)), digits);
            value /= 10;
        }
        return string(digits);
    }
}
