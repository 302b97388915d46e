/// PyTorch's CPU random engine: `at::mt19937` (ATen/core/MT19937RNGEngine.h).
///
/// The output sequence is the standard MT19937 one (`std::mt19937`); what is torch-specific is
/// the seeding: `manual_seed(s)` keeps only the low 32 bits of the 64-bit seed for the state
/// (`init_with_uint32`), so seeds that differ only above bit 31 give the same stream.
struct MersenneTwister19937: Sendable {
    private static let stateSize = 624
    private static let shift = 397
    private static let matrixA: UInt32 = 0x9908_b0df
    private static let upperMask: UInt32 = 0x8000_0000
    private static let lowerMask: UInt32 = 0x7fff_ffff

    private var state: [UInt32]
    /// Draws left before the next twist (torch starts at 1, so the first draw twists).
    private var left: Int
    private var next: Int

    /// Seeds as `at::mt19937(seed)`: the state is initialised from `seed & 0xffffffff`.
    init(seed: UInt64) {
        var state = [UInt32](repeating: 0, count: Self.stateSize)
        state[0] = UInt32(truncatingIfNeeded: seed)
        for j in 1..<Self.stateSize {
            let previous = state[j - 1]
            // 1812433253 * (s ^ (s >> 30)) + j, modulo 2^32.
            state[j] = 1_812_433_253 &* (previous ^ (previous >> 30)) &+ UInt32(j)
        }
        self.state = state
        self.left = 1
        self.next = 0
    }

    /// The next 32-bit output.
    mutating func nextUInt32() -> UInt32 {
        left -= 1
        if left == 0 { twist() }
        var y = state[next]
        next += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9d2c_5680
        y ^= (y << 15) & 0xefc6_0000
        y ^= y >> 18
        return y
    }

    private mutating func twist() {
        left = Self.stateSize
        next = 0
        let n = Self.stateSize, m = Self.shift
        for i in 0..<n {
            let y = (state[i] & Self.upperMask) | (state[(i + 1) % n] & Self.lowerMask)
            var value = state[(i + m) % n] ^ (y >> 1)
            if y & 1 != 0 { value ^= Self.matrixA }
            state[i] = value
        }
    }
}
