import Foundation
import Host

/// What a LoRA file's metadata says, in the two vocabularies tools read:
///
/// - kohya sd-scripts' `ss_*` keys (A1111's LoRA card, kohya's own scripts): `ss_network_module`,
///   `ss_network_dim`/`ss_network_alpha` (a number, or "Dynamic" when modules differ),
///   `ss_network_args` (JSON), `ss_base_model_version` (`sd_v1`, `sd_v2[_v]`, `sdxl_base_v1-0`),
///   `ss_v2`, `ss_output_name`, `ss_tag_frequency`, and the precomputed hashes
///   `sshs_model_hash`/`sshs_legacy_hash` (see ``KohyaHashes``);
/// - Stability AI's ModelSpec `modelspec.*` (architecture such as `stable-diffusion-v1/lora`,
///   implementation, title, resolution, date, prediction type, …).
public struct LoRAMetadata {
    /// Every key as stored.
    public let values: [String: String]

    public init(_ values: [String: String]) { self.values = values }

    public var networkModule: String? { values["ss_network_module"] }
    /// `ss_network_dim` as written ("32", or "Dynamic").
    public var networkDim: String? { values["ss_network_dim"] }
    /// `ss_network_alpha` as written ("16.0", or "Dynamic").
    public var networkAlpha: String? { values["ss_network_alpha"] }
    /// `ss_network_args`, its members as strings (JSON numbers and booleans as written by Python).
    public var networkArgs: [String: String] {
        guard let text = values["ss_network_args"], let members = OrderedJSON.parse(text)?.members else { return [:] }
        var out: [String: String] = [:]
        for (key, value) in members {
            switch value {
            case .string(let s): out[key] = s
            case .number(let n): out[key] = n == n.rounded() && abs(n) < 1e15 ? String(Int(n)) : String(n)
            case .bool(let b): out[key] = b ? "True" : "False"
            case .null: out[key] = "None"
            default: out[key] = "\(value)"
            }
        }
        return out
    }
    public var baseModelVersion: String? { values["ss_base_model_version"] }
    public var outputName: String? { values["ss_output_name"] }
    /// The precomputed addnet hash kohya stores (A1111 prefers it to hashing the file).
    public var sshsModelHash: String? { values["sshs_model_hash"] }
    public var sshsLegacyHash: String? { values["sshs_legacy_hash"] }

    /// `modelspec.*` without the prefix.
    public var modelSpec: [String: String] {
        var out: [String: String] = [:]
        for (key, value) in values where key.hasPrefix("modelspec.") { out[String(key.dropFirst("modelspec.".count))] = value }
        return out
    }

    /// Training tags in A1111's order (see ``TrainingTags``).
    public var rankedTags: [(tag: String, count: Int)] { TrainingTags.ranked(metadata: values) }

    /// The most frequent training tags, or ModelSpec's `trigger_phrase` when there are none.
    public func triggerWords(limit: Int = 10) -> [String] {
        let tags = TrainingTags.triggerWords(metadata: values, limit: limit)
        if !tags.isEmpty { return tags }
        if let phrase = values["modelspec.trigger_phrase"], !phrase.isEmpty { return [phrase] }
        return []
    }
}

/// Builds the metadata AdapterHost writes, in kohya's and ModelSpec's vocabulary, so A1111,
/// ComfyUI and kohya's scripts read written files like their own.
public enum LoRAMetadataBuilder {
    /// `ss_base_model_version` (kohya `get_model_version_str_for_sd1_sd2`, `sdxl_base_v1-0`).
    public static func baseModelVersion(_ family: ModelFamily, vPrediction: Bool = false) -> String {
        switch family {
        case .sd1: return vPrediction ? "sd_v1_v" : "sd_v1"
        case .sd2: return vPrediction ? "sd_v2_v" : "sd_v2"
        case .sdxl: return "sdxl_base_v1-0"
        }
    }

    /// kohya's minimum network metadata (`build_minimum_network_metadata`): module
    /// `networks.lora`, dim and alpha (each a number or "Dynamic"), base model, `ss_v2`, and
    /// `ss_network_args` when given.
    public static func kohyaNetwork(family: ModelFamily?, vPrediction: Bool = false, dim: String, alpha: String,
                                    args: [String: String]? = nil) -> [String: String] {
        var out: [String: String] = [
            "ss_network_module": "networks.lora",
            "ss_network_dim": dim,
            "ss_network_alpha": alpha,
            "ss_v2": family == .sd2 ? "True" : "False",
        ]
        if let family { out["ss_base_model_version"] = baseModelVersion(family, vPrediction: vPrediction) }
        if let args {
            // Python's json.dumps of a dict of strings: ", " and ": " separators, keys in order given.
            let body = args.keys.sorted().map { "\(jsonString($0)): \(jsonString(args[$0]!))" }.joined(separator: ", ")
            out["ss_network_args"] = "{\(body)}"
        }
        return out
    }

    /// "32" for a whole number (kohya writes `str(dim)`), "16.0" style for alpha (`str(float)`).
    public static func dimString(_ values: [Int]) -> String {
        let distinct = Set(values)
        return distinct.count == 1 ? String(distinct.first!) : "Dynamic"
    }

    /// Python's `str(float(x))` for one value, "Dynamic" for several.
    public static func alphaString(_ values: [Double]) -> String {
        let distinct = Set(values)
        guard distinct.count == 1, let value = distinct.first else { return "Dynamic" }
        return pythonFloat(value)
    }

    /// Python's `str(float)`: shortest round-trip digits, ".0" for whole numbers.
    public static func pythonFloat(_ x: Double) -> String {
        if x.isNaN { return "nan" }
        if x.isInfinite { return x > 0 ? "inf" : "-inf" }
        if x == x.rounded(), abs(x) < 1e16 { return String(format: "%.1f", x) }
        return "\(x)"
    }

    /// ModelSpec 1.0.1 keys for a LoRA, as sd-scripts' `sai_model_spec.build_metadata` writes
    /// them for `lora=True`: architecture (`stable-diffusion-v1/lora`,
    /// `stable-diffusion-v2-512/lora` or `-768-v/lora`, `stable-diffusion-xl-v1-base/lora`),
    /// implementation (`diffusers` for SD1/SD2 LoRAs, Stability's sgm repository for SDXL),
    /// resolution, ISO-8601 date, prediction type, title and optional `merged_from`.
    public static func modelSpec(family: ModelFamily?, title: String, date: Date = Date(), vPrediction: Bool = false,
                                 mergedFrom: [String]? = nil) -> [String: String] {
        var out: [String: String] = [
            "modelspec.sai_model_spec": "1.0.1",
            "modelspec.title": title,
            "modelspec.date": isoDate(date),
            "modelspec.prediction_type": vPrediction ? "v" : "epsilon",
        ]
        if let family {
            switch family {
            case .sd1:
                out["modelspec.architecture"] = "stable-diffusion-v1/lora"
                out["modelspec.implementation"] = "diffusers"
                out["modelspec.resolution"] = "512x512"
            case .sd2:
                out["modelspec.architecture"] = vPrediction ? "stable-diffusion-v2-768-v/lora" : "stable-diffusion-v2-512/lora"
                out["modelspec.implementation"] = "diffusers"
                out["modelspec.resolution"] = vPrediction ? "768x768" : "512x512"
            case .sdxl:
                out["modelspec.architecture"] = "stable-diffusion-xl-v1-base/lora"
                out["modelspec.implementation"] = "https://github.com/Stability-AI/generative-models"
                out["modelspec.resolution"] = "1024x1024"
            }
        }
        if let mergedFrom, !mergedFrom.isEmpty { out["modelspec.merged_from"] = mergedFrom.joined(separator: ", ") }
        return out
    }

    /// `datetime.fromtimestamp(int(t)).isoformat()`: local time, seconds, no zone.
    static func isoDate(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone.current
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss"
        return formatter.string(from: date)
    }

    /// A JSON string literal as Python's `json.dumps` writes it (ASCII only: `\uXXXX` escapes).
    static func jsonString(_ s: String) -> String { PythonJSON.string(s, ensureASCII: true) }

    /// An input's metadata as carried into a rewritten file: recomputed or format-specific keys
    /// dropped (`sshs_*`, which ``LoRAFileWriter`` recomputes; `lora_adapter_metadata` and
    /// `format`, which a PEFT output gets anew), and, for kohya output, rank-stabilised flags
    /// removed from `ss_network_args` — written alphas already encode the scale as alpha/rank,
    /// and a reader honouring `rs_lora` would apply √rank a second time.
    public static func carried(_ metadata: [String: String], to format: LoRAOutputFormat) -> [String: String] {
        var out = metadata
        for key in ["sshs_model_hash", "sshs_legacy_hash", "lora_adapter_metadata", "format"] { out[key] = nil }
        if format == .kohya, let text = out["ss_network_args"], let members = OrderedJSON.parse(text)?.members {
            let kept = members.filter { !["rs_lora", "use_rslora"].contains($0.0) }
            if kept.count != members.count {
                out["ss_network_args"] = "{" + kept.map { "\(jsonString($0.0)): \(pythonJSON($0.1))" }.joined(separator: ", ") + "}"
            }
        }
        return out
    }

    /// `json.dumps` of a parsed value (Python's separators).
    static func pythonJSON(_ value: OrderedJSON) -> String {
        switch value {
        case .object(let m): return "{" + m.map { "\(jsonString($0.0)): \(pythonJSON($0.1))" }.joined(separator: ", ") + "}"
        case .array(let a): return "[" + a.map(pythonJSON).joined(separator: ", ") + "]"
        case .string(let s): return jsonString(s)
        case .number(let n): return n == n.rounded() && abs(n) < 1e16 ? String(Int(n)) : "\(n)"
        case .bool(let b): return b ? "true" : "false"
        case .null: return "null"
        }
    }

    /// `ss_tag_frequency` of several files combined: folders kept, counts of a folder present
    /// in several files summed (Python's `json.dumps` layout), or nil when none has any.
    public static func combinedTagFrequency(_ metadata: [[String: String]]) -> String? {
        var folders: [(String, [(String, Int)])] = []
        for values in metadata {
            guard let text = values["ss_tag_frequency"], let parsed = OrderedJSON.parse(text)?.members else { continue }
            for (folder, tags) in parsed {
                var index = folders.firstIndex { $0.0 == folder }
                if index == nil { folders.append((folder, [])); index = folders.count - 1 }
                for (tag, count) in tags.members ?? [] {
                    guard let n = count.numberValue, n.isFinite else { continue }
                    if let j = folders[index!].1.firstIndex(where: { $0.0 == tag }) {
                        folders[index!].1[j].1 += Int(n)
                    } else {
                        folders[index!].1.append((tag, Int(n)))
                    }
                }
            }
        }
        if folders.isEmpty { return nil }
        let body = folders.map { folder, tags in
            "\(jsonString(folder)): {" + tags.map { "\(jsonString($0.0)): \($0.1)" }.joined(separator: ", ") + "}"
        }.joined(separator: ", ")
        return "{\(body)}"
    }
}
