import Foundation
import Tensor
@testable import Host

/// The tiny model fixtures written by tools/gen_model_fixtures.py (diffusers/transformers
/// peers; single files proven with diffusers' own `from_single_file`).
enum ModelFixtures {
    static let directory: URL =
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("models")

    static func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// Families with a single file, a diffusers folder, a key map and a target list.
    static let families: [(name: String, family: ModelFamily)] = [("sd1", .sd1), ("sd2", .sd2), ("sdxl", .sdxl)]

    nonisolated(unsafe) private static var cache: [String: ModelWeights] = [:]
    private static let lock = NSLock()

    /// The model at fixture `name` (`sd1.safetensors`, `sd1`, …), loaded once.
    static func model(_ name: String) throws -> ModelWeights {
        lock.lock()
        defer { lock.unlock() }
        if let model = cache[name] { return model }
        let model = try ModelWeights.load(path: path(name))
        cache[name] = model
        return model
    }
}

/// `<name>.keymap.json`: the peer's (single-file key, diffusers key, transform) triples.
struct PeerKeyMap: Decodable {
    struct Layout: Decodable {
        let unetLevels: Int
        let layersPerBlock: Int
        let vaeLevels: Int?
    }

    let family: String
    let layout: Layout
    let unmappedSingleFile: [String]
    let pairs: [[String]]

    static func load(_ name: String) throws -> PeerKeyMap {
        let data = try Data(contentsOf: ModelFixtures.directory.appendingPathComponent("\(name).keymap.json"))
        return try JSONDecoder().decode(PeerKeyMap.self, from: data)
    }

    /// Pairs as (single, diffusers, transform).
    var triples: [(single: String, diffusers: String, transform: KeyTransform)] {
        pairs.map { ($0[0], $0[1], Self.transform($0[2])) }
    }

    static func transform(_ text: String) -> KeyTransform {
        switch text {
        case "id": return .identity
        case "conv1x1": return .conv1x1
        case "T": return .transpose
        case "qkv0", "qkv1", "qkv2": return .fusedRows(index: Int(String(text.last!))!, count: 3)
        default: fatalError("unknown transform \(text) in fixture")
        }
    }
}

/// `<name>.targets.json`: per module, which peers named it and its layer kind.
struct PeerTargets: Decodable {
    struct Entry: Decodable {
        /// Diffusers module, with component prefix (`unet.down_blocks.0…to_q`).
        let m: String
        /// Dialects whose peer named it.
        let n: [String]
        /// Layer kind in the diffusers model.
        let k: String
        /// Layer kind in the single file: absent = same as `k`; null = no target there.
        let ks: String??

        enum CodingKeys: String, CodingKey { case m, n, k, ks }

        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            m = try c.decode(String.self, forKey: .m)
            n = try c.decode([String].self, forKey: .n)
            k = try c.decode(String.self, forKey: .k)
            if c.contains(.ks) {
                ks = .some(try c.decodeNil(forKey: .ks) ? nil : try c.decode(String.self, forKey: .ks))
            } else {
                ks = .none
            }
        }
    }

    let family: String
    let targets: [Entry]

    static func load(_ name: String) throws -> PeerTargets {
        let data = try Data(contentsOf: ModelFixtures.directory.appendingPathComponent("\(name).targets.json"))
        return try JSONDecoder().decode(PeerTargets.self, from: data)
    }

    /// "linear", "norm", "embedding", "conv2d:S:P".
    static func layer(_ text: String) -> LayerKind {
        switch text {
        case "linear": return .linear
        case "norm": return .norm
        case "embedding": return .embedding
        default:
            let parts = text.split(separator: ":")
            precondition(parts.count == 3 && parts[0] == "conv2d", "unknown layer kind \(text)")
            return .conv2d(stride: Int(parts[1])!, padding: Int(parts[2])!)
        }
    }
}

extension Tensor {
    /// The elements' bytes in row-major order (any layout).
    var rowMajorBytes: [UInt8] {
        (isContiguous ? self : contiguous()).withUnsafeBytes { Array($0) }
    }
}
