import Foundation
import Testing
import Tensor
@testable import SafeTensors

/// Truncations and byte flips of a valid file never crash and never give a partial result:
/// either a typed error, or a file whose every tensor reads.
@Suite struct FuzzTests {
    private static func valid() throws -> [UInt8] { Array(try Fixtures.data("order_torch.safetensors")) }

    /// Validates `bytes` as the reader does and checks the invariants views rely on.
    /// Returns the tensor count, or nil for a typed error; a crash fails the test.
    private static func validateAndCheck(_ bytes: [UInt8]) -> Int? {
        do {
            let header = try validate(bytes)
            // Re-check the invariants a reader relies on before building views.
            var total = 0
            for info in header.tensors {
                #expect(info.fileRange.upperBound <= bytes.count && info.fileRange.lowerBound >= 8)
                #expect(info.byteCount == info.elementCount * info.dtype.byteSize)
                total += info.byteCount
            }
            // Validation succeeded, so the prefix is a header length inside the file.
            let headerLength = bytes.withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
            #expect(total == bytes.count - 8 - headerLength)
            return header.tensors.count
        } catch {
            #expect(!error.description.contains("\n"))
            return nil
        }
    }

    @Test func everyTruncationIsRejected() throws {
        let bytes = try Self.valid()
        #expect(Self.validateAndCheck(bytes) == 19)
        for length in 0..<bytes.count {
            #expect(Self.validateAndCheck(Array(bytes[..<length])) == nil, "truncated to \(length)")
        }
    }

    @Test func byteFlipsNeverCrash() throws {
        let bytes = try Self.valid()
        var accepted = 0, rejected = 0
        for position in 0..<bytes.count {
            for mask: UInt8 in [0x01, 0x20, 0x80, 0xFF] {
                var mutated = bytes
                mutated[position] ^= mask
                if Self.validateAndCheck(mutated) == nil { rejected += 1 } else { accepted += 1 }
            }
        }
        // Flips in the data section (and harmless ones in names) are accepted, the rest not.
        #expect(accepted > 0 && rejected > 0)
    }

    /// Random multi-byte mutations, with JSON-significant characters favoured.
    @Test func randomMutationsNeverCrash() throws {
        let bytes = try Self.valid()
        var rng = SplitMix64(seed: 0x5AFE_7E05)
        let specials = Array("{}[]\",:-0123456789e.\\u ".utf8) + [0x00, 0xFF, 0xC3, 0x80]
        for _ in 0..<3000 {
            var mutated = bytes
            for _ in 0..<Int(rng.next() % 4 + 1) {
                let position = Int(rng.next() % UInt64(mutated.count))
                switch rng.next() % 4 {
                case 0: mutated[position] = specials[Int(rng.next() % UInt64(specials.count))]
                case 1: mutated.insert(specials[Int(rng.next() % UInt64(specials.count))], at: position)
                case 2: mutated.remove(at: position)
                default: mutated[position] = UInt8(truncatingIfNeeded: rng.next())
                }
            }
            _ = Self.validateAndCheck(mutated)
        }
    }

    /// The same through real files and mmap, and reading the data of what opens.
    @Test func mutatedFilesThroughTheReader() throws {
        let bytes = try Self.valid()
        let dir = try TemporaryDirectory()
        var rng = SplitMix64(seed: 42)
        for round in 0..<150 {
            var mutated = bytes
            if round % 3 == 0 {
                mutated = Array(mutated[..<Int(rng.next() % UInt64(bytes.count))])
            } else {
                mutated[Int(rng.next() % UInt64(bytes.count))] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
            }
            let path = try dir.write(mutated, name: "m\(round).safetensors")
            do {
                let file = try SafeTensorsFile(path: path)
                for name in file.names {
                    let t = try file.f32Tensor(named: name)
                    #expect(t.count == (try file.info(named: name)).elementCount)
                }
            } catch {
                #expect(error.file == path)
            }
        }
    }
}

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct SplitMix64 {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
