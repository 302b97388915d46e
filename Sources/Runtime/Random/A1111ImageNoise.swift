import Tensor

/// A1111's per-image noise (`modules/rng.py` `ImageRNG`) with "Random number generator
/// source: CPU": what lets one image of a batch be regenerated alone from its seed.
///
/// Every image has its own `torch.Generator("cpu")` seeded with its seed. The first `next()`
/// draws the start noise `torch.randn(shape)` from each and stacks them; every later `next()`
/// (the noise of ancestral samplers, one call per step) draws again from the same generators.
/// With "Eta noise seed delta" (ENSD) set, the generators are re-created after the first call
/// with `seed + delta`.
///
/// Not covered: variation seeds (subseed slerp), "resize seed from", the GPU and "NV" (Philox)
/// sources.
public struct A1111ImageNoise: Sendable {
    /// One seed per image of the batch.
    public let seeds: [UInt64]
    /// Shape of one image's noise, `[C, H, W]` (latent channels, height / 8, width / 8).
    public let shape: [Int]
    /// A1111's `eta_noise_seed_delta` (0: off).
    public let etaNoiseSeedDelta: UInt64
    private var generators: [TorchCPUGenerator]
    private var isFirst = true

    public init(seeds: [UInt64], shape: [Int], etaNoiseSeedDelta: UInt64 = 0,
                normalKernel: TorchNormalKernel = .avx2) {
        precondition(!seeds.isEmpty, "A1111ImageNoise needs at least one seed")
        self.seeds = seeds
        self.shape = shape
        self.etaNoiseSeedDelta = etaNoiseSeedDelta
        self.generators = seeds.map { TorchCPUGenerator(seed: $0, normalKernel: normalKernel) }
    }

    /// The next noise batch, `[seeds.count] + shape`: the start noise first, then one per call.
    public mutating func next() -> Tensor {
        let count = shape.reduce(1, *)
        var values = [Float]()
        values.reserveCapacity(count * generators.count)
        for index in generators.indices {
            values += generators[index].normalFloats(count: count)
        }
        if isFirst {
            isFirst = false
            if etaNoiseSeedDelta != 0 {
                let kernel = generators[0].normalKernel
                generators = seeds.map { TorchCPUGenerator(seed: $0 &+ etaNoiseSeedDelta, normalKernel: kernel) }
            }
        }
        return Tensor(shape: [generators.count] + shape, values: values)
    }
}
