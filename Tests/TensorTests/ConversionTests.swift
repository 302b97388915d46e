// Tests of CKernels' dtype conversions (convert.c) at every dispatch level this CPU runs.
//
// References are independent of convert.c: Swift's Float16 (compiler-rt's conversions) for
// F16, bit-field decoding and a hand-written round-to-nearest-even for BF16, and PyTorch's
// own tables (a committed fixture) for F8. Every vector level must also agree bit-for-bit
// with the portable level.
import CKernels
import Foundation
import Testing
@testable import Tensor

// MARK: - Dispatch level control

/// The conversion kernel families this CPU runs, slowest (portable) first.
let supportedDispatchLevels = CPU.DispatchLevel.allCases.filter { $0.rawValue <= CPU.bestLevel.rawValue }

/// Serializes changes of the process-wide dispatch level.
///
/// `CPU.level` is global: two tests lowering it at once would run each other's level. Every
/// test that sets it goes through `forEachDispatchLevel`, which holds this lock (the suite is
/// also `.serialized`). Tests elsewhere that convert while a level is lowered stay correct:
/// every level gives the same bits, which is what this file checks.
private let dispatchLevelLock = NSLock()

/// Runs `body` once at each supported level, then restores the level that was in force.
func forEachDispatchLevel(_ body: (CPU.DispatchLevel) throws -> Void) rethrows {
    dispatchLevelLock.lock()
    defer { dispatchLevelLock.unlock() }
    let saved = CPU.level
    defer { CPU.level = saved }
    for level in supportedDispatchLevels {
        CPU.level = level
        #expect(CPU.level == level, "could not select dispatch level \(level)")
        try body(level)
    }
}

// MARK: - Kernel runners (inputs and outputs as bit patterns)

/// A conversion kernel over bit patterns: (source, destination, count).
typealias BitKernel<S, D> = (UnsafePointer<S>, UnsafeMutablePointer<D>, Int) -> Void

let f16ToF32Kernel: BitKernel<UInt16, UInt32> = { s, d, n in
    d.withMemoryRebound(to: Float.self, capacity: n) { ah_f16_to_f32(s, $0, n) }
}
let bf16ToF32Kernel: BitKernel<UInt16, UInt32> = { s, d, n in
    d.withMemoryRebound(to: Float.self, capacity: n) { ah_bf16_to_f32(s, $0, n) }
}
let f32ToF16Kernel: BitKernel<UInt32, UInt16> = { s, d, n in
    s.withMemoryRebound(to: Float.self, capacity: n) { ah_f32_to_f16($0, d, n) }
}
let f32ToBF16Kernel: BitKernel<UInt32, UInt16> = { s, d, n in
    s.withMemoryRebound(to: Float.self, capacity: n) { ah_f32_to_bf16($0, d, n) }
}
let f8E4M3ToF32Kernel: BitKernel<UInt8, UInt32> = { s, d, n in
    d.withMemoryRebound(to: Float.self, capacity: n) { ah_f8e4m3_to_f32(s, $0, n) }
}
let f8E5M2ToF32Kernel: BitKernel<UInt8, UInt32> = { s, d, n in
    d.withMemoryRebound(to: Float.self, capacity: n) { ah_f8e5m2_to_f32(s, $0, n) }
}

/// A value no kernel produces from the inputs used here, to catch writes out of range.
private func sentinel<D: FixedWidthInteger>(_: D.Type) -> D { D(truncatingIfNeeded: 0x5A5A_5A5A as UInt32) }

/// Converts `src[start...]` with `kernel` into a buffer padded on both sides, checks that
/// nothing outside `start..<src.count` was written, and returns the converted elements
/// (so `result[i]` is the conversion of `src[start + i]`).
///
/// Starting at an odd element makes the vector loops read and write unaligned addresses and
/// end with a scalar tail, so one call covers both code paths of a level.
func convertBits<S, D: FixedWidthInteger>(_ src: [S], from start: Int = 0, _ kernel: BitKernel<S, D>,
                                       sourceLocation: SourceLocation = #_sourceLocation) -> [D] {
    let pad = 64
    let n = src.count - start
    var dst = [D](repeating: sentinel(D.self), count: n + 2 * pad)
    src.withUnsafeBufferPointer { s in
        dst.withUnsafeMutableBufferPointer { d in kernel(s.baseAddress! + start, d.baseAddress! + pad, n) }
    }
    let untouched = dst[..<pad].allSatisfy { $0 == sentinel(D.self) }
        && dst[(pad + n)...].allSatisfy { $0 == sentinel(D.self) }
    #expect(untouched, "kernel wrote outside its \(n) elements", sourceLocation: sourceLocation)
    return Array(dst[pad..<(pad + n)])
}

/// Expects `got == want` element by element, reporting the first mismatches with their inputs.
func expectBitsEqual<S: FixedWidthInteger, D: FixedWidthInteger>(
    _ got: [D], _ want: [D], inputs: [S], _ what: String,
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(got.count == want.count, "\(what): \(got.count) results, expected \(want.count)",
            sourceLocation: sourceLocation)
    // Fast path (debug builds compare element by element slowly): equal bytes, nothing to report.
    let identical = got.withUnsafeBytes { g in
        want.withUnsafeBytes { w in g.count == w.count && (g.count == 0 || memcmp(g.baseAddress!, w.baseAddress!, g.count) == 0) }
    }
    if identical { return }
    var mismatches = 0
    var examples: [String] = []
    for i in 0..<min(got.count, want.count) where got[i] != want[i] {
        mismatches += 1
        if examples.count < 6 { examples.append("\(hex(inputs[i])) -> \(hex(got[i])), expected \(hex(want[i]))") }
    }
    #expect(mismatches == 0, "\(what): \(mismatches) mismatches, e.g. \(examples.joined(separator: "; "))",
            sourceLocation: sourceLocation)
}

func hex<T: FixedWidthInteger>(_ v: T) -> String {
    let digits = String(v, radix: 16, uppercase: true)
    return "0x" + String(repeating: "0", count: max(0, T.bitWidth / 4 - digits.count)) + digits
}

/// SplitMix64: a small seeded generator, so a failing random sample can be reproduced.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Independent references

/// F16 → F32 bits by Swift's Float16 (a NaN comes out quiet with its payload, like F16C).
func referenceF16ToF32(_ h: UInt16) -> UInt32 { Float(Float16(bitPattern: h)).bitPattern }

/// F32 → F16 bits by Swift's Float16(Float): round to nearest even, overflow to ±inf,
/// NaN quieted with the top payload bits kept.
func referenceF32ToF16(_ x: UInt32) -> UInt16 { Float16(Float(bitPattern: x)).bitPattern }

/// BF16 → F32 by decoding the fields (not by shifting bits), for every non-NaN value.
func referenceBF16Value(_ b: UInt16) -> Float {
    let sign: FloatingPointSign = b & 0x8000 != 0 ? .minus : .plus
    let exponent = Int((b >> 7) & 0xFF), mantissa = Int(b & 0x7F)
    if exponent == 0xFF { return mantissa == 0 ? (sign == .minus ? -.infinity : .infinity) : .nan }
    if exponent == 0 { return Float(sign: sign, exponent: -133, significand: Float(mantissa)) } // m·2^-133
    return Float(sign: sign, exponent: exponent - 127, significand: 1 + Float(mantissa) / 128)
}

/// F32 → BF16 as PyTorch's c10::BFloat16 rounds: to nearest, ties to even on the 16 dropped
/// bits; overflow therefore reaches ±inf; every NaN (either sign) becomes 0x7FC0.
func referenceF32ToBF16(_ x: UInt32) -> UInt16 {
    if x & 0x7FFF_FFFF > 0x7F80_0000 { return 0x7FC0 }
    var kept = x >> 16
    let dropped = x & 0xFFFF
    if dropped > 0x8000 || (dropped == 0x8000 && kept & 1 == 1) { kept += 1 } // cannot pass 0xFF80: NaNs are out
    return UInt16(kept)
}

// MARK: - Inputs

let allUInt16: [UInt16] = (0...UInt16.max).map { $0 }

/// F32 bit patterns for rounding tests: half uniform over all 2^32 patterns (mostly far out
/// of F16 range), half with exponents in and around F16's range (2^-28 ..< 2^17), where F16
/// rounding, subnormals and overflow happen.
func randomF32Patterns(count: Int, seed: UInt64) -> [UInt32] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { i in
        let r = rng.next()
        if i % 2 == 0 { return UInt32(truncatingIfNeeded: r) }
        let sign = UInt32(truncatingIfNeeded: r >> 63) << 31
        let exponent = UInt32(99 + (r >> 32) % 45) // biased 99 = 2^-28 ... 143 = 2^16
        return sign | exponent << 23 | UInt32(truncatingIfNeeded: r) & 0x7F_FFFF
    }
}

// MARK: - Tests that change the dispatch level

@Suite("Conversions at every dispatch level", .serialized)
struct ConversionDispatchTests {
    @Test func levelSetterClampsToBestAndRestores() {
        forEachDispatchLevel { _ in }
        dispatchLevelLock.lock()
        defer { dispatchLevelLock.unlock() }
        let saved = CPU.level
        CPU.level = .avx512
        #expect(CPU.level == CPU.bestLevel, "a level above the best must clamp to the best")
        CPU.level = .portable
        #expect(CPU.level == .portable)
        CPU.level = saved
        #expect(CPU.level == saved)
        #expect(supportedDispatchLevels.first == .portable && supportedDispatchLevels.last == CPU.bestLevel)
    }

    @Test func f16ToF32ExhaustiveAtEveryLevel() {
        let want = allUInt16.map(referenceF16ToF32)
        forEachDispatchLevel { level in
            for start in [0, 1, 7] {
                let got = convertBits(allUInt16, from: start, f16ToF32Kernel)
                expectBitsEqual(got, Array(want[start...]), inputs: Array(allUInt16[start...]),
                                "F16→F32 at \(level), from element \(start)")
            }
            // What the header promises for NaN, spelled out: sign and payload kept, quiet bit set.
            for h: UInt16 in [0x7C01, 0xFC01, 0x7D55, 0x7E00, 0xFFFF] {
                let got = convertBits([h], f16ToF32Kernel)[0]
                let payload = UInt32(h & 0x3FF) << 13
                #expect(got == UInt32(h & 0x8000) << 16 | 0x7FC0_0000 | payload,
                        "F16 NaN \(hex(h)) -> \(hex(got)) at \(level)")
            }
        }
    }

    @Test func bf16ToF32ExhaustiveAtEveryLevel() {
        forEachDispatchLevel { level in
            let got = convertBits(allUInt16, from: 3, bf16ToF32Kernel)
            var bad: [String] = []
            for (i, b) in allUInt16[3...].enumerated() {
                let value = Float(bitPattern: got[i])
                let want = referenceBF16Value(b)
                // NaN: the bits are kept as they are (no quieting), as PyTorch's widening does.
                let ok = want.isNaN ? got[i] == UInt32(b) << 16 : value.bitPattern == want.bitPattern
                if !ok && bad.count < 6 { bad.append("\(hex(b)) -> \(hex(got[i]))") }
            }
            #expect(bad.isEmpty, "BF16→F32 at \(level): \(bad)")
        }
    }

    @Test func f32ToF16SpecialCasesAtEveryLevel() {
        // (input, expected F16) written out from the IEEE rules, independent of any library.
        let cases: [(Float, UInt16)] = [
            (0, 0x0000), (-0.0, 0x8000), (.infinity, 0x7C00), (-.infinity, 0xFC00),
            (1, 0x3C00), (-2, 0xC000),
            (1 + 0x1p-11, 0x3C00),              // tie, even below
            (1 + 3 * 0x1p-11, 0x3C02),          // tie, even above
            ((1 + 0x1p-11).nextUp, 0x3C01),     // just above a tie
            (65504, 0x7BFF), (65519, 0x7BFF),   // largest finite; below the overflow tie
            (65520, 0x7C00), (-65520, 0xFC00),  // the tie at the top rounds to (even) inf
            (1e10, 0x7C00), (-.greatestFiniteMagnitude, 0xFC00),
            (0x1p-14, 0x0400),                  // smallest normal
            (0x1p-14 - 0x1p-25, 0x0400),        // tie between largest subnormal and smallest normal
            (0x1p-24, 0x0001), (-0x1p-24, 0x8001), // smallest subnormal
            (0x1p-25, 0x0000), (-0x1p-25, 0x8000), // tie with zero: even is zero
            ((0x1p-25 as Float).nextUp, 0x0001),
            (3 * 0x1p-25, 0x0002),              // tie between 1 and 2 ulps: even is 2
            (5 * 0x1p-25, 0x0002),              // tie between 2 and 3 ulps: even is 2
            (.leastNonzeroMagnitude, 0x0000), (-.leastNonzeroMagnitude, 0x8000),
            (Float(bitPattern: 0x7FC0_0000), 0x7E00), (Float(bitPattern: 0xFFC0_0000), 0xFE00),
            (Float(bitPattern: 0x7F80_0001), 0x7E00), // signalling NaN: quiet NaN, never inf
            (Float(bitPattern: 0x7FA0_0000), 0x7F00), // top payload bits kept
            (Float(bitPattern: 0xFFFF_FFFF), 0xFFFF),
        ]
        // Three copies so each case lands both in a vector block and in a scalar tail.
        let inputs = Array(repeating: cases.map { $0.0.bitPattern }, count: 3).flatMap { $0 }
        let want = Array(repeating: cases.map { $0.1 }, count: 3).flatMap { $0 }
        forEachDispatchLevel { level in
            for start in [0, 1, 5] {
                expectBitsEqual(convertBits(inputs, from: start, f32ToF16Kernel), Array(want[start...]),
                                inputs: Array(inputs[start...]), "F32→F16 special cases at \(level)")
            }
        }
        // The hand-written expectations agree with the library reference too.
        expectBitsEqual(inputs.map(referenceF32ToF16), want, inputs: inputs, "Float16(Float) on the special cases")
    }

    @Test func f32ToF16EveryMidpointAtEveryLevel() {
        // For every pair of neighbouring positive F16 values: the exact midpoint (a tie, goes to
        // the even one), and the F32 values just below and above it.
        var inputs: [UInt32] = [], want: [UInt16] = []
        for h in UInt16(0)..<0x7C00 {
            let low = Double(Float(Float16(bitPattern: h)))
            let high = h == 0x7BFF ? 65536 : Double(Float(Float16(bitPattern: h + 1))) // inf's "neighbour"
            let mid = Float((low + high) / 2) // exact: a midpoint needs 12 significant bits
            let even = h & 1 == 0 ? h : h + 1
            for sign: UInt16 in [0, 0x8000] {
                let s32 = UInt32(sign) << 16
                inputs += [mid.bitPattern | s32, mid.nextDown.bitPattern | s32, mid.nextUp.bitPattern | s32]
                want += [even | sign, h | sign, (h + 1) | sign]
            }
        }
        forEachDispatchLevel { level in
            expectBitsEqual(convertBits(inputs, from: 1, f32ToF16Kernel), Array(want[1...]),
                            inputs: Array(inputs[1...]), "F32→F16 midpoints at \(level)")
        }
        expectBitsEqual(inputs.map(referenceF32ToF16), want, inputs: inputs, "Float16(Float) on the midpoints")
    }

    @Test func f16RoundTripIsIdentityAtEveryLevel() {
        // Every F16 is exact in F32, so narrowing the widened value gives it back; a NaN
        // comes back quiet (bit 9 set) with its sign and payload.
        let want = allUInt16.map { h -> UInt16 in h & 0x7C00 == 0x7C00 && h & 0x3FF != 0 ? h | 0x0200 : h }
        forEachDispatchLevel { level in
            let widened = convertBits(allUInt16, f16ToF32Kernel)
            expectBitsEqual(convertBits(widened, f32ToF16Kernel), want, inputs: allUInt16, "F16→F32→F16 at \(level)")
        }
    }

    @Test func f32ToF16RandomSampleAtEveryLevel() {
        let inputs = randomF32Patterns(count: 1 << 21, seed: 0xF16)
        let want = inputs.map(referenceF32ToF16)
        var portable: [UInt16] = []
        forEachDispatchLevel { level in
            let got = convertBits(inputs, f32ToF16Kernel)
            if level == .portable { portable = got }
            expectBitsEqual(got, want, inputs: inputs, "F32→F16 random sample at \(level) vs Float16(Float)")
            expectBitsEqual(got, portable, inputs: inputs, "F32→F16 random sample at \(level) vs portable")
        }
    }

    @Test func largeOutputsTakeTheStreamingPathAtEveryLevel() {
        // Outputs of AH_STREAM_MIN_BYTES or more are written with streaming stores after a
        // scalar head that aligns the destination; odd starts make that head non-empty.
        let streamBytes = Int(AH_STREAM_MIN_BYTES)
        let wideCount = streamBytes / 4 + 1_000, narrowCount = streamBytes / 2 + 1_000
        // Inputs tile a small base (every F16 pattern, shuffled; random F32 patterns), so the
        // references are computed once per base element.
        let halves = (0..<wideCount).map { UInt16(truncatingIfNeeded: $0 &* 40_503) }
        let f16Reference = allUInt16.map(referenceF16ToF32)
        let floatBase = randomF32Patterns(count: 1 << 16, seed: 0x5EED)
        let floats = (0..<narrowCount).map { floatBase[$0 & 0xFFFF] }
        let f16Base = floatBase.map(referenceF32ToF16), bf16Base = floatBase.map(referenceF32ToBF16)
        // Odd starts: the scalar head before the aligned streaming loop is not empty.
        let (wideStart, bfStart, narrowStart, bfNarrowStart) = (3, 1, 5, 6)
        let wantF16Wide = halves[wideStart...].map { f16Reference[Int($0)] }
        let wantBF16Wide = halves[bfStart...].map { UInt32($0) << 16 }
        let wantF16 = (narrowStart..<narrowCount).map { f16Base[$0 & 0xFFFF] }
        let wantBF16 = (bfNarrowStart..<narrowCount).map { bf16Base[$0 & 0xFFFF] }
        forEachDispatchLevel { level in
            expectBitsEqual(convertBits(halves, from: wideStart, f16ToF32Kernel), wantF16Wide,
                            inputs: Array(halves[wideStart...]), "large F16→F32 at \(level)")
            expectBitsEqual(convertBits(halves, from: bfStart, bf16ToF32Kernel), wantBF16Wide,
                            inputs: Array(halves[bfStart...]), "large BF16→F32 at \(level)")
            expectBitsEqual(convertBits(floats, from: narrowStart, f32ToF16Kernel), wantF16,
                            inputs: Array(floats[narrowStart...]), "large F32→F16 at \(level)")
            expectBitsEqual(convertBits(floats, from: bfNarrowStart, f32ToBF16Kernel), wantBF16,
                            inputs: Array(floats[bfNarrowStart...]), "large F32→BF16 at \(level)")
        }
    }

    @Test func f32ToBF16SpecialCasesAtEveryLevel() {
        let cases: [(UInt32, UInt16)] = [
            (0x0000_0000, 0x0000), (0x8000_0000, 0x8000),
            (0x3F80_0000, 0x3F80),              // 1
            (0x3F80_8000, 0x3F80),              // 1 + 2^-8: tie, even below
            (0x3F81_8000, 0x3F82),              // tie, even above
            (0x3F80_8001, 0x3F81), (0x3F80_7FFF, 0x3F80),
            (0xBF81_8000, 0xBF82),              // negative tie
            (0x7F7F_FFFF, 0x7F80),              // FLT_MAX rounds to inf
            (0x7F7F_7FFF, 0x7F7F),              // largest value that stays finite
            (0x7F80_0000, 0x7F80), (0xFF80_0000, 0xFF80),
            (0x7FC0_0000, 0x7FC0), (0xFFC0_0000, 0x7FC0), // NaN: canonical, sign dropped
            (0x7F80_0001, 0x7FC0), (0xFF80_0001, 0x7FC0), // signalling NaN: never inf
            (0x7FFF_FFFF, 0x7FC0), (0x7F80_FFFF, 0x7FC0),
            (0x0000_0001, 0x0000), (0x8000_0001, 0x8000), // tiny subnormals
            (0x0000_8000, 0x0000), (0x0001_8000, 0x0002), // subnormal ties
            (0x007F_FFFF, 0x0080),              // largest subnormal rounds up to the smallest normal
        ]
        let inputs = Array(repeating: cases.map { $0.0 }, count: 3).flatMap { $0 }
        let want = Array(repeating: cases.map { $0.1 }, count: 3).flatMap { $0 }
        forEachDispatchLevel { level in
            for start in [0, 1, 5] {
                expectBitsEqual(convertBits(inputs, from: start, f32ToBF16Kernel), Array(want[start...]),
                                inputs: Array(inputs[start...]), "F32→BF16 special cases at \(level)")
            }
        }
        expectBitsEqual(inputs.map(referenceF32ToBF16), want, inputs: inputs, "reference on the special cases")
    }

    @Test func f32ToBF16EveryMidpointAtEveryLevel() {
        // BF16 is truncated F32, so the midpoint above BF16 value b is b's F32 bits + 0x8000.
        var inputs: [UInt32] = [], want: [UInt16] = []
        for b in UInt16(0)..<0x7F80 {
            let even = b & 1 == 0 ? b : b + 1
            for sign: UInt16 in [0, 0x8000] {
                let mid = UInt32(b | sign) << 16 | 0x8000
                inputs += [mid, mid - 1, mid + 1]
                want += [even | sign, b | sign, (b + 1) | sign]
            }
        }
        forEachDispatchLevel { level in
            expectBitsEqual(convertBits(inputs, from: 1, f32ToBF16Kernel), Array(want[1...]),
                            inputs: Array(inputs[1...]), "F32→BF16 midpoints at \(level)")
        }
    }

    @Test func f32ToBF16RandomSampleAtEveryLevel() {
        let inputs = randomF32Patterns(count: 1 << 21, seed: 0xBF16)
        let want = inputs.map(referenceF32ToBF16)
        var portable: [UInt16] = []
        forEachDispatchLevel { level in
            let got = convertBits(inputs, f32ToBF16Kernel)
            if level == .portable { portable = got }
            expectBitsEqual(got, want, inputs: inputs, "F32→BF16 random sample at \(level) vs reference")
            expectBitsEqual(got, portable, inputs: inputs, "F32→BF16 random sample at \(level) vs portable")
        }
    }
}

// MARK: - Tests at the level in force

@Suite("F8 and F64 conversions")
struct NarrowFormatConversionTests {
    /// PyTorch's F32 bit pattern for every F8 byte (tools/gen_f8_tables.py).
    struct F8Tables: Decodable {
        let torch_version: String
        let F8_E4M3: [UInt32]
        let F8_E5M2: [UInt32]
    }

    static func loadTables() throws -> F8Tables {
        let url = try #require(Bundle.module.url(forResource: "f8_tables", withExtension: "json",
                                                 subdirectory: "Fixtures"),
                               "Fixtures/f8_tables.json missing from the test bundle")
        return try JSONDecoder().decode(F8Tables.self, from: Data(contentsOf: url))
    }

    static let allBytes: [UInt8] = (0...UInt8.max).map { $0 }

    @Test func f8E4M3MatchesTorchForAll256() throws {
        let tables = try Self.loadTables()
        try #require(tables.F8_E4M3.count == 256)
        expectBitsEqual(convertBits(Self.allBytes, f8E4M3ToF32Kernel), tables.F8_E4M3, inputs: Self.allBytes,
                        "F8_E4M3→F32 vs torch \(tables.torch_version)")
        // Spot checks of the format itself: max 448, min subnormal 2^-9, NaN at 0x7F/0xFF only.
        let values = convertBits(Self.allBytes, f8E4M3ToF32Kernel).map(Float.init(bitPattern:))
        #expect(values[0x7E] == 448 && values[0xFE] == -448 && values[0x01] == 0x1p-9)
        #expect(values.indices.filter { values[$0].isNaN } == [0x7F, 0xFF])
        #expect(!values.contains { $0.isInfinite })
    }

    @Test func f8E5M2MatchesTorchForAll256() throws {
        let tables = try Self.loadTables()
        try #require(tables.F8_E5M2.count == 256)
        expectBitsEqual(convertBits(Self.allBytes, f8E5M2ToF32Kernel), tables.F8_E5M2, inputs: Self.allBytes,
                        "F8_E5M2→F32 vs torch \(tables.torch_version)")
        let values = convertBits(Self.allBytes, f8E5M2ToF32Kernel).map(Float.init(bitPattern:))
        #expect(values[0x7B] == 57344 && values[0x7C] == .infinity && values[0xFC] == -.infinity)
        #expect(values[0x01] == 0x1p-16)
        #expect(values.indices.filter { values[$0].isNaN } == [0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF])
    }

    @Test func f64AndF32ConvertWithNearestEven() {
        let doubles: [Double] = [0, -0.0, 1, 1 + 0x1p-24, 1 + 3 * 0x1p-24, 1 + 0x1p-24 + 0x1p-40, 1e39, -1e39,
                                 .infinity, 0x1p-150, 0x1p-149 * 1.5, .nan]
        let want: [Float] = [0, -0.0, 1, 1, 1 + 2 * 0x1p-23, 1 + 0x1p-23, .infinity, -.infinity,
                             .infinity, 0, 2 * 0x1p-149, .nan]
        var got = [Float](repeating: 7, count: doubles.count)
        ah_f64_to_f32(doubles, &got, doubles.count)
        for (i, (g, w)) in zip(got, want).enumerated() {
            #expect(g.bitPattern == w.bitPattern || (g.isNaN && w.isNaN), "F64 \(doubles[i]) -> \(g), expected \(w)")
        }
        let floats: [Float] = [1.5, -0x1p-149, .greatestFiniteMagnitude, -.infinity]
        var wide = [Double](repeating: 7, count: floats.count)
        ah_f32_to_f64(floats, &wide, floats.count)
        #expect(wide == [1.5, -0x1p-149, Double(Float.greatestFiniteMagnitude), -.infinity])
    }
}

@Suite("Tensor.to over parallel chunks")
struct TensorConversionTests {
    @Test func largeF16AndBF16TensorsWidenAndNarrowExactly() {
        // Above Parallel.elementwiseThreshold, so the work is split into chunks; an odd count
        // makes the chunk boundaries fall at odd elements; the F32 output is large enough
        // (> 4 MiB) to take the huge-page path of Tensor.to.
        let n = (1 << 20) + 12_345
        #expect(n > Parallel.elementwiseThreshold && n * 4 > hugePageAdviceThreshold)
        var rng = SplitMix64(seed: 42)
        let halves = (0..<n).map { _ in UInt16(truncatingIfNeeded: rng.next()) & 0x7BFF } // finite, positive
        let source = Tensor(uninitialized: [n], dtype: .f16)
        source.withUnsafeMutableBytes { b in halves.withUnsafeBytes { b.copyMemory(from: $0) } }

        let widened = source.to(.f32)
        #expect(widened.dtype == .f32 && widened.shape == [n])
        let floats = widened.floats
        var bad = 0
        for i in 0..<n where floats[i].bitPattern != referenceF16ToF32(halves[i]) { bad += 1 }
        #expect(bad == 0, "\(bad) of \(n) F16 elements widened wrongly by Tensor.to")

        let narrowed = widened.to(.f16)
        let back = narrowed.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        #expect(back == halves, "F16 → F32 → F16 through Tensor.to is not the identity")

        let bf16 = widened.to(.bf16)
        let bfBits = bf16.withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }
        bad = 0
        for i in 0..<n where bfBits[i] != referenceF32ToBF16(floats[i].bitPattern) { bad += 1 }
        #expect(bad == 0, "\(bad) of \(n) F32 elements narrowed to BF16 wrongly by Tensor.to")
        let bfWidened = bf16.to(.f32).floats
        bad = 0
        for i in 0..<n where bfWidened[i].bitPattern != UInt32(bfBits[i]) << 16 { bad += 1 }
        #expect(bad == 0, "\(bad) of \(n) BF16 elements widened wrongly by Tensor.to")
    }
}
