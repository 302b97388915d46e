import Foundation
import Host
import Testing
import Tensor
@testable import Runtime

/// The runtime's layers against naive F64 loops.
@Suite("Network layers")
struct LayersTests {
    let workspace = Workspace()

    /// A loader over an in-memory diffusers model with `tensors` under `unet.<name>`.
    private func loader(_ tensors: [(String, Tensor)]) -> WeightLoader {
        let model = NetworkFixtures.memoryModel(tensors.map { ("unet." + $0.0, $0.1) })
        return WeightLoader(model: model, component: .unet)
    }

    @Test("Linear on tokens, with bias and residual; F16 weights widened")
    func linearTokens() throws {
        let w = NetworkFixtures.random([5, 7], seed: 1), b = NetworkFixtures.random([5], seed: 2)
        let x = NetworkFixtures.random([2, 3, 7], seed: 3), residual = NetworkFixtures.random([2, 3, 5], seed: 4)
        let layer = try Linear(loader([("fc.weight", w), ("fc.bias", b)]).child("fc"))
        let y = try layer(x, workspace: workspace, adding: residual)
        var expected = Naive.linear(x.floats, rows: 6, w.floats, out: 5, inWidth: 7, bias: b.floats)
        for i in 0..<expected.count { expected[i] += residual.floats[i] }
        #expect(y.shape == [2, 3, 5])
        #expect(relativeError(y.floats, expected) < 1e-6)

        // F16 storage: the layer widens per use; same result as widening by hand.
        let half = try Linear(loader([("fc.weight", w.to(.f16))]).child("fc"))
        let yh = try half(x, workspace: workspace)
        let reference = Naive.linear(x.floats, rows: 6, w.to(.f16).floats, out: 5, inWidth: 7, bias: nil)
        #expect(relativeError(yh.floats, reference) < 1e-6)
    }

    @Test("Linear reading channels-first images and writing channels-first output")
    func linearChannelsFirst() throws {
        let w = NetworkFixtures.random([6, 4, 1, 1], seed: 5), b = NetworkFixtures.random([6], seed: 6)
        let layer = try Linear(loader([("p.weight", w), ("p.bias", b)]).child("p"))
        let image = NetworkFixtures.random([2, 4, 3, 5], seed: 7)
        let tokens = try layer.forward(channelsFirst: image, workspace: workspace)
        // Reference: tokens = image permuted to [B, HW, C], then the linear map.
        let asTokens = image.reshaped([2, 4, 15]).permuted([0, 2, 1]).contiguous()
        let expected = Naive.linear(asTokens.floats, rows: 30, w.floats, out: 6, inWidth: 4, bias: b.floats)
        #expect(tokens.shape == [2, 15, 6])
        #expect(relativeError(tokens.floats, expected) < 1e-6)

        let back = try Linear(loader([("q.weight", NetworkFixtures.random([4, 6], seed: 8))]).child("q"))
        let residual = NetworkFixtures.random([2, 4, 3, 5], seed: 9)
        let image2 = try back.forwardToChannelsFirst(tokens, height: 3, width: 5, workspace: workspace, adding: residual)
        let lin = Naive.linear(tokens.floats, rows: 30, try back.weight.current().floats, out: 4, inWidth: 6, bias: nil)
        // lin is [B, HW, 4] → NCHW, plus the residual.
        var expected2 = [Float](repeating: 0, count: 2 * 4 * 15)
        for bi in 0..<2 { for p in 0..<15 { for c in 0..<4 {
            expected2[(bi * 4 + c) * 15 + p] = lin[(bi * 15 + p) * 4 + c] + residual.floats[(bi * 4 + c) * 15 + p]
        } } }
        #expect(image2.shape == [2, 4, 3, 5])
        #expect(relativeError(image2.floats, expected2) < 1e-6)
    }

    /// One conv case against the naive loops.
    private func checkConv(channels: Int, out: Int, kernel: Int, stride: Int, padding: ConvPadding, height: Int, width: Int,
                           upsample: Bool = false, budget: Int? = nil, tiledPlane: Int? = nil, seed: UInt64) throws {
        let w = NetworkFixtures.random([out, channels, kernel, kernel], seed: seed)
        let b = NetworkFixtures.random([out], seed: seed + 1)
        let x = NetworkFixtures.random([2, channels, height, width], seed: seed + 2)
        var conv = try Conv2d(loader([("c.weight", w), ("c.bias", b)]).child("c"), stride: stride, padding: padding)
        if let budget { conv.columnBudget = budget }
        if let tiledPlane { conv.tiledMinimumPlane = tiledPlane }
        let extra = (0..<(2 * out)).map { Float($0) * 0.25 - 1 }
        let y = try conv(x, workspace: workspace, upsample2x: upsample, perImageChannel: extra)
        let source = upsample ? upsampleNearest2x(x) : x
        let (h, wd) = (source.shape[2], source.shape[3])
        let outH = (h + padding.top + padding.bottom - kernel) / stride + 1
        let outW = (wd + padding.left + padding.right - kernel) / stride + 1
        var expected = Naive.conv(source.floats, batch: 2, channels: channels, height: h, width: wd, w.floats, out: out,
                                  kernel: (kernel, kernel), bias: b.floats, stride: stride, top: padding.top,
                                  left: padding.left, outH: outH, outW: outW)
        for i in 0..<expected.count { expected[i] += extra[i / (outH * outW)] }
        #expect(y.shape == [2, out, outH, outW])
        #expect(relativeError(y.floats, expected) < 1e-5, "kernel \(kernel) stride \(stride) \(padding) up \(upsample)")
    }

    @Test("Conv2d: 3×3 same, stride 2, 1×1, asymmetric padding, fused 2× upsampling, blocked columns")
    func conv() throws {
        try checkConv(channels: 3, out: 5, kernel: 3, stride: 1, padding: .symmetric(1), height: 6, width: 7, seed: 10)
        try checkConv(channels: 3, out: 4, kernel: 3, stride: 2, padding: .symmetric(1), height: 7, width: 6, seed: 20)
        try checkConv(channels: 4, out: 3, kernel: 1, stride: 1, padding: .symmetric(0), height: 5, width: 5, seed: 30)
        try checkConv(channels: 2, out: 3, kernel: 3, stride: 2, padding: ConvPadding(top: 0, bottom: 1, left: 0, right: 1),
                      height: 8, width: 8, seed: 40)
        try checkConv(channels: 3, out: 2, kernel: 3, stride: 1, padding: .symmetric(1), height: 4, width: 5, upsample: true, seed: 50)
        // A budget of a few rows forces several unfold + GEMM blocks per image.
        try checkConv(channels: 3, out: 4, kernel: 3, stride: 1, padding: .symmetric(1), height: 9, width: 6, budget: 3 * 9 * 6 * 2, seed: 60)
        try checkConv(channels: 3, out: 4, kernel: 3, stride: 1, padding: .symmetric(1), height: 5, width: 3, upsample: true, budget: 1, seed: 70)
    }

    @Test("Conv2d tile by tile (the large-image path): several tiles per image, upsampling, stride 2, residual")
    func convTiled() throws {
        // 40×20 outputs: tiles of 512/20 = 25 rows, two per image, the last one partial.
        try checkConv(channels: 3, out: 4, kernel: 3, stride: 1, padding: .symmetric(1), height: 40, width: 20, tiledPlane: 1, seed: 110)
        try checkConv(channels: 2, out: 3, kernel: 3, stride: 1, padding: .symmetric(1), height: 20, width: 10, upsample: true,
                      tiledPlane: 1, seed: 120)
        try checkConv(channels: 3, out: 2, kernel: 3, stride: 2, padding: ConvPadding(top: 0, bottom: 1, left: 0, right: 1),
                      height: 50, width: 40, tiledPlane: 1, seed: 130)
        let w = NetworkFixtures.random([5, 3, 3, 3], seed: 140)
        let x = NetworkFixtures.random([2, 3, 30, 24], seed: 141), r = NetworkFixtures.random([2, 5, 30, 24], seed: 142)
        var conv = try Conv2d(loader([("c.weight", w)]).child("c"))
        conv.tiledMinimumPlane = 1
        let y = try conv(x, workspace: workspace, adding: r)
        var expected = Naive.conv(x.floats, batch: 2, channels: 3, height: 30, width: 24, w.floats, out: 5, kernel: (3, 3),
                                  bias: nil, stride: 1, top: 1, left: 1, outH: 30, outW: 24)
        for i in 0..<expected.count { expected[i] += r.floats[i] }
        #expect(relativeError(y.floats, expected) < 1e-5)
    }

    @Test("Linear split into row blocks over the cores, with bias and residual")
    func linearRowBlocks() throws {
        let w = NetworkFixtures.random([6, 5], seed: 150), b = NetworkFixtures.random([6], seed: 151)
        let x = NetworkFixtures.random([2, 9, 5], seed: 152), residual = NetworkFixtures.random([2, 9, 6], seed: 153)
        var layer = try Linear(loader([("fc.weight", w), ("fc.bias", b)]).child("fc"))
        // 18 rows in blocks of 4: five GEMMs, the last one of 2 rows.
        (layer.tiledRowBlock, layer.tiledMinimumWork) = (4, 0)
        let y = try layer(x, workspace: workspace, adding: residual)
        var expected = Naive.linear(x.floats, rows: 18, w.floats, out: 6, inWidth: 5, bias: b.floats)
        for i in 0..<expected.count { expected[i] += residual.floats[i] }
        #expect(relativeError(y.floats, expected) < 1e-6)
    }

    @Test("Conv2d with a residual image")
    func convResidual() throws {
        let w = NetworkFixtures.random([3, 3, 3, 3], seed: 80)
        let x = NetworkFixtures.random([1, 3, 4, 4], seed: 81), r = NetworkFixtures.random([1, 3, 4, 4], seed: 82)
        let conv = try Conv2d(loader([("c.weight", w)]).child("c"))
        let y = try conv(x, workspace: workspace, adding: r)
        var expected = Naive.conv(x.floats, batch: 1, channels: 3, height: 4, width: 4, w.floats, out: 3, kernel: (3, 3),
                                  bias: nil, stride: 1, top: 1, left: 1, outH: 4, outW: 4)
        for i in 0..<expected.count { expected[i] += r.floats[i] }
        #expect(relativeError(y.floats, expected) < 1e-5)
    }

    @Test("Nearest resize matches torch's index rule")
    func nearest() {
        let x = Tensor(shape: [1, 1, 2, 3], values: [1, 2, 3, 4, 5, 6])
        #expect(upsampleNearest2x(x).floats == [1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 4, 4, 5, 5, 6, 6])
        // 2 → 3 rows: floor(i·2/3) = 0, 0, 1.
        #expect(upsampleNearest(x, height: 3, width: 3).floats == [1, 2, 3, 1, 2, 3, 4, 5, 6])
    }

    @Test("GroupNorm (+ SiLU) against F64 statistics")
    func groupNorm() throws {
        let (b, c, h, w, groups) = (2, 6, 3, 4, 3)
        let gamma = NetworkFixtures.random([c], seed: 90), beta = NetworkFixtures.random([c], seed: 91)
        // An offset makes E[x²] ≫ var: the F64 moments must still be accurate.
        let x = NetworkFixtures.random([b, c, h, w], seed: 92, scale: 2) + 30
        let norm = try GroupNorm(loader([("n.weight", gamma), ("n.bias", beta)]).child("n"), groups: groups, eps: 1e-5)
        let xs = x.floats, g = gamma.floats, bt = beta.floats
        var expected = [Float](repeating: 0, count: xs.count), expectedSilu = expected
        let per = c / groups * h * w
        for item in 0..<(b * groups) {
            let slice = xs[(item * per)..<((item + 1) * per)].map(Double.init)
            let mean = slice.reduce(0, +) / Double(per)
            let variance = slice.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(per)
            for i in 0..<per {
                let index = item * per + i, channel = (index / (h * w)) % c
                let v = Float((slice[i] - mean) / (variance + 1e-5).squareRoot()) * g[channel] + bt[channel]
                expected[index] = v
                expectedSilu[index] = Naive.silu(v)
            }
        }
        #expect(relativeError(try norm(x).floats, expected) < 2e-5)
        #expect(relativeError(try norm(x, silu: true).floats, expectedSilu) < 2e-5)
    }

    @Test("LayerNorm against F64")
    func layerNorm() throws {
        let gamma = NetworkFixtures.random([37], seed: 100), beta = NetworkFixtures.random([37], seed: 101)
        let x = NetworkFixtures.random([3, 5, 37], seed: 102) + 4
        let norm = try LayerNorm(loader([("ln.weight", gamma), ("ln.bias", beta)]).child("ln"))
        let xs = x.floats
        var expected = [Float](repeating: 0, count: xs.count)
        for r in 0..<15 {
            let row = xs[(r * 37)..<((r + 1) * 37)].map(Double.init)
            let mean = row.reduce(0, +) / 37
            let variance = row.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 37
            for i in 0..<37 {
                expected[r * 37 + i] = Float((row[i] - mean) / (variance + 1e-5).squareRoot()) * gamma.floats[i] + beta.floats[i]
            }
        }
        #expect(relativeError(try norm(x).floats, expected) < 1e-5)
    }

    @Test("Activations: GELU (erf), SiLU, quick GELU, GEGLU")
    func activations() {
        // Includes tails (exp underflow/overflow clamps) and a non-multiple of 8 count.
        let values: [Float] = (0..<1003).map { Float($0) * 0.05 - 25 } + [-100, 100, -1e-6, 0, 1e-6]
        let x = Tensor(shape: [values.count], values: values)
        let gelu = Activation.gelu(x).floats, silu = Activation.silu(x).floats, quick = Activation.quickGELU(x).floats
        for (i, v) in values.enumerated() {
            // erf to 1.5e-7 absolute: |GELU error| ≤ 0.5·|x|·1.5e-7 plus rounding.
            #expect(abs(gelu[i] - Naive.gelu(v)) <= 1e-7 * abs(v) + 2e-7 * abs(Naive.gelu(v)) + 1e-30, "gelu(\(v))")
            #expect(abs(silu[i] - Naive.silu(v)) <= 3e-7 * abs(Naive.silu(v)) + 1e-30, "silu(\(v))")
            // torch: x * sigmoid(1.702 * x), the product rounded to F32 first (in the far tail a
            // one-ulp change of that argument changes e^arg by ~1e-6 relative).
            let q = Float(Double(v) / (1 + Foundation.exp(-Double(Float(1.702) * v))))
            #expect(abs(quick[i] - q) <= 5e-7 * abs(q) + 1e-30, "quickGELU(\(v))")
        }
        let projected = NetworkFixtures.random([3, 2 * 13], seed: 110, scale: 4)
        let out = geglu(projected), p = projected.floats
        var expected = [Float](repeating: 0, count: 3 * 13)
        for r in 0..<3 { for j in 0..<13 { expected[r * 13 + j] = p[r * 26 + j] * Naive.gelu(p[r * 26 + 13 + j]) } }
        #expect(out.shape == [3, 13])
        #expect(relativeError(out.floats, expected) < 1e-6)
    }

    @Test("Attention kernels (fused and GEMM): heads, query blocks, parallel items, causal mask")
    func attentionKernel() throws {
        for (heads, d, dv, n, m, causal, budget) in [(2, 3, 3, 5, 7, false, 1 << 20), (3, 4, 2, 9, 9, true, 9 * 2),
                                                       (1, 8, 8, 40, 33, false, 33 * 5), (4, 2, 2, 70, 70, false, 1 << 20),
                                                       // Large enough to run items on all cores at once.
                                                       (2, 16, 16, 256, 256, false, 64 * 256),
                                                       // Heads wider than the fused kernel's limit: the GEMM path.
                                                       (1, 168, 168, 20, 17, false, 17 * 6), (2, 170, 161, 9, 9, true, 1 << 20),
                                                       (2, 170, 170, 300, 200, false, 1 << 20)] {
            let q = NetworkFixtures.random([2, n, heads * d], seed: 120, scale: 2)
            let k = NetworkFixtures.random([2, m, heads * d], seed: 121, scale: 2)
            let v = NetworkFixtures.random([2, m, heads * dv], seed: 122)
            let out = Tensor(uninitialized: [2, n, heads * dv])
            Attention.multiHead(q: q.f32Pointer, k: k.f32Pointer, v: v.f32Pointer, out: out.f32Pointer, batch: 2,
                                queries: n, keys: m, heads: heads, headDim: d, valueDim: dv,
                                scale: 1 / Float(d).squareRoot(), causal: causal, scoreBudget: budget, workspace: workspace)
            let expected = Naive.attention(q: q.floats, k: k.floats, v: v.floats, batch: 2, queries: n, keys: m,
                                           heads: heads, headDim: d, valueDim: dv, causal: causal)
            #expect(relativeError(out.floats, expected) < 2e-6, "heads \(heads) n \(n) m \(m) causal \(causal)")
        }
    }

    @Test("Timestep embedding matches diffusers' get_timestep_embedding")
    func timestepEmbeddingFixture() throws {
        let f = try NetworkFixtures.tensors("unet/timestep_embedding.safetensors")
        let t = try #require(f["timesteps"]).floats
        for dim in [32, 31] {
            let ours = timestepEmbedding(t, dimension: dim)
            let reference = try #require(f["dim\(dim)"])
            #expect(ours.shape == reference.shape)
            // Arguments up to 999 rad: one F32 ulp of t·f is ~6e-5 of phase, so allow a little.
            #expect(NetworkFixtures.relativeError(ours, reference) < 2e-5, "dim \(dim)")
        }
    }
}
