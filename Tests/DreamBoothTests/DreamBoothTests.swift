@testable import DreamBooth
import Foundation
import Host
import SafeTensors
import Tensor
import Testing

/// Tests/DreamBoothTests/Fixtures (made by tools/gen_ti_hn_db_fixtures.py).
let dbFixtures: String = Bundle.module.resourceURL!.appendingPathComponent("Fixtures").path
/// The tiny base models (HostTests' fixtures, read in place).
let tinySD1: String = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("HostTests/Fixtures/models/sd1.safetensors").path

/// A temporary directory removed when the value goes away.
final class TemporaryDirectory {
    let path: String
    init() throws {
        path = NSTemporaryDirectory() + "ah-db-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    deinit { try? FileManager.default.removeItem(atPath: path) }
    func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }
}

/// The tiny SD1 checkpoint rewritten: every F16 tensor as `dtype`, then `replacements` put in,
/// written to `path` (metadata given, to make files with the same weights but another hash).
func writeCheckpoint(_ path: String, dtype: DType = .f16, replacements: [String: Tensor] = [:],
                     metadata: [String: String] = [:]) throws {
    let base = try SafeTensorsFile(path: tinySD1)
    var writer = SafeTensorsWriter(metadata: metadata)
    for name in base.names {
        var t = try base.tensor(named: name)
        if t.dtype == .f16 && dtype != .f16 { t = t.to(dtype) }
        writer.add(name, tensor: replacements[name] ?? t)
    }
    try writer.write(to: path)
}

/// The fixture's changed tensors.
func changes(_ tag: String) throws -> [String: Tensor] {
    let file = try SafeTensorsFile(path: "\(dbFixtures)/\(tag)_changes.safetensors")
    return Dictionary(uniqueKeysWithValues: try file.names.map { ($0, try file.tensor(named: $0)) })
}

func rawBytes(_ t: Tensor) -> [UInt8] { t.contiguous().withUnsafeBytes { Array($0) } }

func registry() throws -> AdapterRegistry {
    let r = AdapterRegistry()
    try registerDreamBooth(into: r)
    return r
}

struct Manifest: Decodable {
    struct Entry: Decodable {
        let changed_tensors: Int
        let changed_elements: Int
        let unreproducible_elements: Int
        let stored_dtypes: [String: Int]
    }
    let f16: Entry
    let f32: Entry
    static func load() throws -> Manifest {
        try JSONDecoder().decode(Manifest.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dbFixtures)/manifest.json")))
    }
}

@Suite struct SHA256Tests {
    struct Vectors: Decodable {
        let patterns: [String: String]
        let abc: String
        let sd1: String
        enum CodingKeys: String, CodingKey { case patterns, abc, sd1 = "sd1.safetensors" }
    }
    static let vectors = try! JSONDecoder().decode(Vectors.self, from: Data(contentsOf: URL(fileURLWithPath: "\(dbFixtures)/sha256.json")))

    @Test func matchesHashlib() {
        #expect(SHA256.hash(Array("abc".utf8)).hex == Self.vectors.abc)
        #expect(SHA256.hash([UInt8]()).hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        for (count, digest) in Self.vectors.patterns {
            let bytes = (0..<Int(count)!).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
            #expect(SHA256.hash(bytes).hex == digest, "\(count) bytes")
        }
    }

    @Test func incrementalUpdatesAgree() {
        let bytes = (0..<100_003).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
        var hasher = SHA256()
        var start = 0
        for size in [1, 63, 64, 65, 0, 127, 5000, 3] {
            hasher.update(bytes[start..<(start + size)])
            start += size
        }
        hasher.update(bytes[start...])
        #expect(hasher.finalize().hex == Self.vectors.patterns["100003"])
    }

    @Test func fileAndModelHashes() throws {
        #expect(try SHA256.hash(fileAt: tinySD1).hex == Self.vectors.sd1)
        let model = try ModelWeights.load(path: tinySD1)
        #expect(try model.fileSHA256() == Self.vectors.sd1)
        // A diffusers folder is no single file.
        let folder = try ModelWeights.load(path: (tinySD1 as NSString).deletingPathExtension)
        #expect(try folder.fileSHA256() == nil)
    }
}

@Suite struct CheckpointDiffTests {
    /// Writes base/tuned for `tag` ("f16"/"f32"), differences them, returns paths and summary.
    func makeDiff(_ tag: String, in dir: TemporaryDirectory) throws -> (base: String, tuned: String, diff: String, CheckpointDiff.Summary) {
        let dtype: DType = tag == "f16" ? .f16 : .f32
        let base = dir.file("base.safetensors"), tuned = dir.file("tuned.safetensors"), diff = dir.file("diff.safetensors")
        if dtype == .f16 {
            try FileManager.default.copyItem(atPath: tinySD1, toPath: base)
        } else {
            try writeCheckpoint(base, dtype: .f32)
        }
        try writeCheckpoint(tuned, dtype: dtype, replacements: try changes(tag))
        let summary = try CheckpointDiff.write(base: base, tuned: tuned, out: diff)
        return (base, tuned, diff, summary)
    }

    @Test(arguments: ["f16", "f32"])
    func writesOnlyChangedTensorsAsExpected(_ tag: String) throws {
        let dir = try TemporaryDirectory()
        let (base, tunedPath, diffPath, summary) = try makeDiff(tag, in: dir)
        let manifest = try Manifest.load()
        let entry = tag == "f16" ? manifest.f16 : manifest.f32
        let changed = try changes(tag)
        let expected = try SafeTensorsFile(path: "\(dbFixtures)/\(tag)_expected.safetensors")
        let diff = try SafeTensorsFile(path: diffPath)
        #expect(Set(diff.names) == Set(changed.keys))
        #expect(summary.writtenKeys.count == entry.changed_tensors && summary.omittedKeys.isEmpty)
        #expect(summary.changedElements == entry.changed_elements)
        // Elements no F32 Δ reproduces are stored as the exact F64 difference instead, so
        // nothing is left unreproducible (the fixture's count is what F32 alone would leave).
        #expect(summary.unreproducibleElements == 0)
        #expect(summary.comparedTensors == 965)
        let baseFile = try SafeTensorsFile(path: base)
        var f64Tensors = 0
        for name in diff.names {
            let got = try diff.tensor(named: name), want = try expected.tensor(named: "diff/\(name)")
            #expect(got.shape == want.shape, "\(name)")
            if got.dtype == .f64 {
                // Exactly B − A in F64.
                f64Tensors += 1
                let a = try baseFile.tensor(named: name).doubles
                let b = try SafeTensorsFile(path: tunedPath).tensor(named: name).doubles
                #expect(got.doubles == zip(a, b).map { $1 - $0 }, "\(name)")
            } else {
                #expect(got.dtype == want.dtype, "\(name)")
                #expect(rawBytes(got) == rawBytes(want), "\(name)")
            }
        }
        // F64 storage appears exactly where F32 alone left elements unreproducible.
        #expect((f64Tensors > 0) == (entry.unreproducible_elements > 0))
        var dtypeCounts: [String: Int] = [:]
        for name in diff.names where (try diff.tensor(named: name)).dtype != .f64 {
            dtypeCounts[(try diff.tensor(named: name)).dtype == .f16 ? "float16" : "float32", default: 0] += 1
        }
        #expect(dtypeCounts.values.reduce(0, +) + f64Tensors == entry.stored_dtypes.values.reduce(0, +))
        #expect(diff.metadata["adapterhost.method"] == "dreambooth")
        let baseHash = try SHA256.hash(fileAt: base).hex
        #expect(diff.metadata["adapterhost.base_sha256"] == baseHash)
        #expect(diff.metadata["adapterhost.base_family"] == "sd1")
        #expect(diff.metadata["adapterhost.base_file"] == "base.safetensors")
        #expect(diff.metadata["adapterhost.tuned_file"] == "tuned.safetensors")
        #expect(diff.metadata["adapterhost.unreproducible_elements"] == "0")
    }

    @Test(arguments: ["f16", "f32"])
    func mergeReproducesTunedAndInterpolates(_ tag: String) throws {
        let dir = try TemporaryDirectory()
        let (base, tuned, diffPath, _) = try makeDiff(tag, in: dir)
        let adapter = try registry().load(try SafeTensorsFile(path: diffPath))
        #expect(adapter.methodIDs == ["dreambooth"] && adapter.baseModel == .sd1)
        let baseHash = try SHA256.hash(fileAt: base).hex
        #expect(adapter.requiredBaseHash == baseHash)
        // 15 changed tensors in 11 layers (weight and bias of a layer are one module).
        #expect(adapter.modules.count == 11)
        let expected = try SafeTensorsFile(path: "\(dbFixtures)/\(tag)_expected.safetensors")
        let tunedFile = try SafeTensorsFile(path: tuned)
        let changed = try changes(tag)
        // Weight 1: the tuned checkpoint, bit for bit, for every dtype (F32 included: tensors
        // whose difference F32 cannot carry exactly are stored and added in F64).
        let model = try ModelWeights.load(path: base)
        let plan = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 1)])
        #expect(plan.report.applied == adapter.modules.count && plan.report.skipped.isEmpty)
        let engine = PatchEngine(model: model)
        try engine.apply(plan)
        for key in model.keys {
            #expect(rawBytes(model.tensor(key)!) == rawBytes(try tunedFile.tensor(named: key)), "\(key)")
        }
        engine.restore()

        // Weight 0.5: A + 0.5·Δ in F32, rounded to the checkpoint dtype.
        let half = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter, weight: 0.5)])
        try engine.apply(half)
        let diffFile = try SafeTensorsFile(path: diffPath)
        let baseFile = try SafeTensorsFile(path: base)
        for key in changed.keys {
            if diffFile.contains(key), try diffFile.tensor(named: key).dtype == .f64 {
                // A + 0.5·Δ summed in F64 (Δ exact), rounded once, as the host does.
                let a = try baseFile.tensor(named: key).doubles, d = try diffFile.tensor(named: key).doubles
                let want = Tensor(shape: model.tensor(key)!.shape, values: zip(a, d).map { Float($0 + 0.5 * $1) })
                #expect(rawBytes(model.tensor(key)!) == rawBytes(want.to(model.tensor(key)!.dtype)), "\(key)")
            } else {
                #expect(rawBytes(model.tensor(key)!) == rawBytes(try expected.tensor(named: "half/\(key)")), "\(key)")
            }
        }
        engine.restore()
        let pristine = try SafeTensorsFile(path: base)
        for key in changed.keys { #expect(rawBytes(model.tensor(key)!) == rawBytes(try pristine.tensor(named: key))) }
    }

    @Test func anotherBaseIsRefusedUnlessForced() throws {
        let dir = try TemporaryDirectory()
        let (_, tuned, diffPath, _) = try makeDiff("f16", in: dir)
        let adapter = try registry().load(try SafeTensorsFile(path: diffPath))
        // Same weights, another file (different metadata, so a different SHA-256).
        let other = dir.file("other.safetensors")
        try writeCheckpoint(other, metadata: ["note": "a re-save"])
        let model = try ModelWeights.load(path: other)
        do {
            _ = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)])
            Issue.record("a plan on another base file was accepted")
        } catch let PatchError.baseFileMismatch(adapterPath, required, modelPath, actual) {
            #expect(adapterPath == diffPath && modelPath == other)
            let otherHash = try SHA256.hash(fileAt: other).hex
            #expect(required == adapter.requiredBaseHash && actual == otherHash)
        }
        let forced = try PatchPlan(model: model, stack: [AdapterApplication(adapter: adapter)], force: true)
        try PatchEngine(model: model).apply(forced)
        let tunedFile = try SafeTensorsFile(path: tuned)
        for key in model.keys { #expect(rawBytes(model.tensor(key)!) == rawBytes(try tunedFile.tensor(named: key)), "\(key)") }
        // The family check is never skipped.
        let sdxl = try ModelWeights.load(path: (tinySD1 as NSString).deletingLastPathComponent + "/sdxl.safetensors")
        #expect(throws: PatchError.self) { try PatchPlan(model: sdxl, stack: [AdapterApplication(adapter: adapter)], force: true) }
    }

    @Test func unmappedTensorsAreLeftOutOrKept() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.safetensors"), tuned = dir.file("tuned.safetensors")
        try FileManager.default.copyItem(atPath: tinySD1, toPath: base)
        let schedule = try SafeTensorsFile(path: tinySD1).tensor(named: "alphas_cumprod").scaled(by: 0.5)
        let weightKey = "model.diffusion_model.out.2.weight"
        let weight = try SafeTensorsFile(path: tinySD1).tensor(named: weightKey).to(.f32).scaled(by: 1.5).to(.f16)
        try writeCheckpoint(tuned, replacements: ["alphas_cumprod": schedule, weightKey: weight])
        let summary = try CheckpointDiff.write(base: base, tuned: tuned, out: dir.file("d1.safetensors"))
        #expect(summary.omittedKeys == ["alphas_cumprod"] && summary.writtenKeys == [weightKey])
        #expect(try SafeTensorsFile(path: dir.file("d1.safetensors")).metadata["adapterhost.omitted_tensors"] == "1")
        let kept = try CheckpointDiff.write(base: base, tuned: tuned, out: dir.file("d2.safetensors"),
                                            options: .init(includeUnmapped: true))
        #expect(Set(kept.writtenKeys) == ["alphas_cumprod", weightKey])
        let adapter = try registry().load(try SafeTensorsFile(path: dir.file("d2.safetensors")))
        let plan = try PatchPlan(model: try ModelWeights.load(path: base), stack: [AdapterApplication(adapter: adapter)])
        #expect(plan.report.applied == 1 && plan.report.skipped.map(\.module) == ["alphas_cumprod"])
    }

    @Test func f32StorageOptionAndCounts() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.safetensors"), tuned = dir.file("tuned.safetensors")
        try FileManager.default.copyItem(atPath: tinySD1, toPath: base)
        try writeCheckpoint(tuned, replacements: try changes("f16"))
        let summary = try CheckpointDiff.write(base: base, tuned: tuned, out: dir.file("d.safetensors"), options: .init(storage: .f32))
        #expect(Set(summary.storedDTypes.values) == [.f32])
        let diff = try SafeTensorsFile(path: dir.file("d.safetensors"))
        let expected = try SafeTensorsFile(path: "\(dbFixtures)/f16_expected.safetensors")
        for name in diff.names {
            #expect(rawBytes(try diff.tensor(named: name)) == rawBytes(try expected.tensor(named: "diff/\(name)").to(.f32)))
        }
    }

    @Test func mismatchedCheckpointsAreRefusedByKey() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.safetensors")
        try FileManager.default.copyItem(atPath: tinySD1, toPath: base)
        let key = "model.diffusion_model.out.2.bias"
        let original = try SafeTensorsFile(path: tinySD1).tensor(named: key)
        let cases: [(String, [String: Tensor], DreamBoothError.Rule)] = [
            ("shape", [key: Tensor(zeros: [5], dtype: .f16)], .shapeMismatch(base: [4], tuned: [5])),
            ("dtype", [key: original.to(.f32)], .dtypeMismatch(base: "F16", tuned: "F32")),
        ]
        for (name, replacements, rule) in cases {
            let tuned = dir.file("\(name).safetensors")
            try writeCheckpoint(tuned, replacements: replacements)
            #expect(throws: DreamBoothError(file: tuned, key: key, rule: rule)) {
                try CheckpointDiff.write(base: base, tuned: tuned, out: dir.file("out.safetensors"))
            }
        }
        // A key only one of them has.
        let extra = dir.file("extra.safetensors")
        var writer = SafeTensorsWriter()
        let file = try SafeTensorsFile(path: tinySD1)
        for name in file.names { writer.add(name, tensor: try file.tensor(named: name)) }
        writer.add("model_ema.decay", tensor: Tensor(shape: [], values: [0.999]))
        try writer.write(to: extra)
        #expect(throws: DreamBoothError(file: extra, key: "model_ema.decay", rule: .onlyInOne(presentIn: extra, missingFrom: base))) {
            try CheckpointDiff.write(base: base, tuned: extra, out: dir.file("out.safetensors"))
        }
        #expect(throws: DreamBoothError(file: base, key: "model_ema.decay", rule: .onlyInOne(presentIn: extra, missingFrom: base))) {
            try CheckpointDiff.write(base: extra, tuned: base, out: dir.file("out.safetensors"))
        }
        // Identical checkpoints: nothing to write.
        #expect(throws: DreamBoothError(file: tinySD1, key: "", rule: .identical)) {
            try CheckpointDiff.write(base: base, tuned: tinySD1, out: dir.file("out.safetensors"))
        }
        #expect(!FileManager.default.fileExists(atPath: dir.file("out.safetensors")))
    }

    @Test func refusesToOverwriteAnInput() throws {
        let dir = try TemporaryDirectory()
        let base = dir.file("base.safetensors"), tuned = dir.file("tuned.safetensors")
        try FileManager.default.copyItem(atPath: tinySD1, toPath: base)
        try writeCheckpoint(tuned, replacements: try changes("f16"))
        let before = try SHA256.hash(fileAt: base).hex, tunedBefore = try SHA256.hash(fileAt: tuned).hex
        let link = dir.file("link.safetensors")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: base)
        for out in [base, tuned, link, dir.path + "/./base.safetensors"] {
            #expect(throws: DreamBoothError.self) { try CheckpointDiff.write(base: base, tuned: tuned, out: out) }
        }
        #expect(try SHA256.hash(fileAt: base).hex == before && SHA256.hash(fileAt: tuned).hex == tunedBefore)
    }
}

/// The element-level choice of Δ (F16/BF16/F32 corner cases).
@Suite struct TensorDifferenceTests {
    func f16(_ bits: [UInt16]) -> Tensor {
        let t = Tensor(uninitialized: [bits.count], dtype: .f16)
        t.withUnsafeMutableBytes { p in bits.withUnsafeBytes { p.copyMemory(from: $0) } }
        return t
    }

    @Test func negativeZeroNeedsACorrectedDifference() {
        // F16 0.0001678 → −0: A + (B − A) is +0; one ulp further rounds to −0 (found by the
        // fixture script's search over random pairs).
        let d = TensorDifference(base: f16([0x0980]), tuned: f16([0x8000]), storage: .auto)
        #expect(d.corrected == 1 && d.unreproducible == 0)
        #expect(d.delta.floats[0].bitPattern == 0xb930_0001)
        let a = f16([0x0980]).to(.f32).floats[0]
        #expect(Float16(a + d.delta.floats[0]).bitPattern == 0x8000)
        #expect(Float16(a + (f16([0x8000]).to(.f32).floats[0] - a)).bitPattern == 0x0000)
    }

    @Test func extremeShrinkageComesBackThroughF64() {
        // F16 2.264 → −9.936e-05: the F32 sum's grid (2⁻²²) is coarser than B's F16 ulp, so no
        // F32 Δ reproduces it; the exact F64 difference does.
        let d = TensorDifference(base: f16([0x4087, 0x3c00]), tuned: f16([0x8683, 0x3c01]), storage: .auto)
        #expect(d.unreproducible == 0 && d.corrected == 1 && d.storageDType == .f64 && d.maxError == 0)
        let a = f16([0x4087, 0x3c00]).doubles, b = f16([0x8683, 0x3c01]).doubles
        #expect(d.delta.doubles == zip(a, b).map { $1 - $0 })
        #expect(Float16(Float(a[0] + d.delta.doubles[0])).bitPattern == 0x8683)
        // F32: 1 → 2⁻³⁰ (an F32 Δ rounds to −1; in F64 it is exact).
        let f = TensorDifference(base: Tensor(shape: [1], values: [1]), tuned: Tensor(shape: [1], values: [0x1p-30]), storage: .auto)
        #expect(f.unreproducible == 0 && f.maxError == 0 && f.storageDType == .f64)
        #expect(Float(1.0 + f.delta.doubles[0]) == 0x1p-30)
    }

    @Test func bf16RandomPairsComeBack() {
        var state: UInt64 = 12345
        func next() -> Float {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Float(Int64(bitPattern: state >> 11) % 2_000_001 - 1_000_000) / 1_000_000
        }
        let n = 4096
        let a = Tensor(shape: [n], values: (0..<n).map { _ in next() * 0.2 }).to(.bf16)
        let b = Tensor(shape: [n], values: (0..<n).map { i in a.to(.f32).floats[i] * (1 + next() * 0.05) + next() * 0.01 }).to(.bf16)
        let d = TensorDifference(base: a, tuned: b, storage: .auto)
        #expect(d.unreproducible == 0)
        let merged = (a.to(.f32) + d.delta).to(.bf16)
        #expect(rawBytes(merged) == rawBytes(b))
        // Stored narrow only when every element is exact in BF16.
        if d.storageDType == .bf16 { #expect(rawBytes(d.delta.to(.bf16).to(.f32)) == rawBytes(d.delta)) }
    }
}
