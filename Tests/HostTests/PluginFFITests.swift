import Host
import Testing
import Tensor

/// Extra plugin functions called through libffi (Tests/HostTests/BadPlugins/ffi_probe.c covers
/// every ah_ffi_type), and the argument checks that run before any call. Serialized: the tests
/// count the probe's calls.
@Suite(.serialized) struct PluginFFITests {
    static let probe: PluginMethod = {
        try! PluginLoader.open(path: PluginTestSupport.compileBadPlugin("ffi_probe"))
    }()

    @Test func everyTypeCrossesTheBoundary() throws {
        let p = Self.probe
        // 1 + 10·(-2) + 100·0.5 + 1000·0.25 + 10000·strlen("abc") = 30281
        #expect(try p.call(function: "mix", arguments: [.int32(1), .int64(-2), .float(0.5), .double(0.25), .string("abc")])
                == .double(30281))
        #expect(try p.call(function: "negate", arguments: [.int32(5)]) == .int32(-5))
        #expect(try p.call(function: "negate", arguments: [.int32(Int32.min + 1)]) == .int32(Int32.max))
        #expect(try p.call(function: "big") == .int64(1 << 40))
        #expect(try p.call(function: "halve", arguments: [.float(3)]) == .float(1.5))
        #expect(try p.call(function: "echo", arguments: [.string("héllo")]) == .string("echo:héllo"))
        let marker = UnsafeMutableRawPointer(bitPattern: 0x1234_5678)
        #expect(try p.call(function: "identity", arguments: [.pointer(marker)]) == .pointer(marker))
        #expect(try p.call(function: "identity", arguments: [.pointer(nil)]) == .pointer(nil))
        // 1+2+3+4 + 0.5+0.25+0.125 + strlen("eight") = 15.875
        #expect(try p.call(function: "eight", arguments: [.int32(1), .int32(2), .int32(3), .int32(4), .double(0.5),
                                                          .double(0.25), .double(0.125), .string("eight")]) == .double(15.875))
        guard case .int32(let before) = try p.call(function: "call_count") else { Issue.record("no count"); return }
        #expect(try p.call(function: "bump") == .void)
        #expect(try p.call(function: "call_count") == .int32(before + 1))
    }

    @Test func signaturesAreListed() {
        let mix = Self.probe.functions.first { $0.name == "mix" }
        #expect(mix?.signature == "mix(int32_t, int64_t, float, double, const char *) -> double")
        #expect(mix?.doc == "a + 10b + 100c + 1000d + 10000 strlen(s)")
    }

    @Test func mismatchedCallsAreRefusedBeforeCalling() throws {
        let p = Self.probe
        guard case .int32(let before) = try p.call(function: "call_count") else { Issue.record("no count"); return }
        func refused(_ name: String, _ args: [FFIValue], _ reason: String) {
            #expect(throws: PluginError.badCall(path: p.path, method: "ffi-probe", function: name, reason: reason)) {
                try p.call(function: name, arguments: args)
            }
        }
        refused("negate", [], "takes 1 argument(s), got 0 (negate(int32_t) -> int32_t)")
        refused("negate", [.int32(1), .int32(2)], "takes 1 argument(s), got 2 (negate(int32_t) -> int32_t)")
        refused("negate", [.int64(1)], "argument 1 is int64_t, expected int32_t (negate(int32_t) -> int32_t)")
        refused("halve", [.double(1)], "argument 1 is double, expected float (halve(float) -> float)")
        refused("echo", [.pointer(nil)], "argument 1 is void *, expected const char * (echo(const char *) -> const char *)")
        refused("echo", [.string("a\u{0}b")], "argument 1 contains a NUL byte and cannot cross as a C string")
        refused("negate", [.void], "argument 1 is void, expected int32_t (negate(int32_t) -> int32_t)")
        #expect {
            try p.call(function: "nope")
        } throws: { error in
            guard case let .badCall(_, _, function, reason) = error as? PluginError else { return false }
            return function == "nope" && reason.hasPrefix("no such function (available: mix(")
        }
        // None of the refused calls reached the plugin.
        #expect(try p.call(function: "call_count") == .int32(before))
    }

    @Test func aNullStringReturnIsAnError() {
        let p = Self.probe
        #expect(throws: PluginError.badOutput(path: p.path, method: "ffi-probe", operation: "function 'null_string'",
                                              module: nil, reason: "returned NULL for a string")) {
            try p.call(function: "null_string")
        }
    }
}
