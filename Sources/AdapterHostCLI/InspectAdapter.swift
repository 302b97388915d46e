import Foundation
import Host
import LoRA
import SafeTensors
import Tensor

/// The `inspect` section for files the host recognises: an adapter (which method(s), dialect,
/// modules, ranks and alphas, base model, trigger words, hashes, kohya/modelspec metadata) or a
/// checkpoint (method "checkpoint", its family and hashes). Files that are neither get no section.
///
/// Hashes are the ones tools identify files by (see ``ModelHashes``): SHA-256 and AutoV2 (its
/// first 10 hex digits, A1111's checkpoint hash), the addnet hash (SHA-256 of the tensor data;
/// its first 12 hex digits are A1111's "Lora hashes"), and the legacy 8-digit hash. For a LoRA,
/// a stored `sshs_model_hash` is compared with the addnet hash: A1111 trusts the stored value,
/// so a stale one misidentifies the file.
struct AdapterSection: InspectSection {
    let jsonKey: String
    let jsonValue: JSONValue
    let title: String
    let tableLines: [String]

    /// The section for `path`, or nil when the file is neither an adapter nor a checkpoint.
    /// Never throws: a file the host cannot place simply has no section.
    static func make(path: String) -> AdapterSection? {
        guard let file = try? SafeTensorsFile(path: path) else { return nil }
        if let detection = try? FamilyDetector.detect(path: path, keys: file.names, shape: { try? file.info(named: $0).shape }) {
            return checkpoint(path: path, detection: detection)
        }
        let registry = AdapterRegistry()
        registerBuiltIns(into: registry)
        guard let adapter = try? registry.load(file) else { return nil }
        return self.adapter(path: path, adapter: adapter)
    }

    private static func checkpoint(path: String, detection: FamilyDetection) -> AdapterSection {
        let hashes = try? ModelHashes.compute(fileAt: path)
        var members: [(String, JSONValue)] = [
            ("method", .array([.string("checkpoint")])),
            ("family", .string(detection.family.rawValue)),
            ("naming", .string(detection.naming.rawValue)),
            ("family_rule", .string(detection.rule)),
        ]
        members.append(("hashes", hashesJSON(hashes, stored: nil)))
        var lines = [
            "Method:      checkpoint",
            "Family:      \(detection.family.rawValue) (\(detection.rule))",
            "Naming:      \(detection.naming.rawValue)",
        ]
        lines += hashLines(hashes, stored: nil)
        return AdapterSection(jsonKey: "model", jsonValue: .object(members), title: "Model", tableLines: lines)
    }

    private static func adapter(path: String, adapter: Adapter) -> AdapterSection {
        let metadata = LoRAMetadata(adapter.metadata)
        let ranks = adapter.modules.compactMap(\.rank)
        let alphas = adapter.modules.compactMap(\.alpha).map(Double.init)
        let typeCounts = Dictionary(grouping: adapter.modules, by: \.moduleType).map { ($0.key, $0.value.count) }
            .sorted { $0.0 < $1.0 }
        let triggers = metadata.triggerWords()
        let isSafeTensors = true
        let hashes = try? ModelHashes.compute(fileAt: path, isSafeTensors: isSafeTensors)

        func uniform<T: Hashable>(_ values: [T], _ render: (T) -> JSONValue) -> JSONValue {
            let distinct = Set(values)
            if distinct.isEmpty { return .null }
            return distinct.count == 1 ? render(distinct.first!) : .string("dynamic")
        }
        let rankValue = uniform(ranks) { .int($0) }
        let alphaValue = uniform(alphas) { .string(LoRAMetadataBuilder.pythonFloat($0)) }

        var kohya: [(String, JSONValue)] = []
        for key in ["ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_network_args", "ss_base_model_version",
                    "ss_output_name", "ss_training_comment"] {
            if let value = adapter.metadata[key] { kohya.append((key, .string(value))) }
        }
        let spec = metadata.modelSpec.sorted { $0.key < $1.key }.map { ($0.key, JSONValue.string($0.value)) }

        let members: [(String, JSONValue)] = [
            ("method", .array(adapter.methodIDs.map { .string($0) })),
            ("format", .string(adapter.format)),
            ("modules", .int(adapter.modules.count)),
            ("module_types", .object(typeCounts.map { ($0.0, .int($0.1)) })),
            ("rank", rankValue),
            ("alpha", alphaValue),
            ("base_model", adapter.baseModel.map { .string($0.rawValue) } ?? .null),
            ("embeddings", .array(adapter.embeddings.map { .string($0.name) })),
            ("trigger_words", .array(triggers.map { .string($0) })),
            ("hashes", hashesJSON(hashes, stored: metadata.sshsModelHash)),
            ("kohya", .object(kohya)),
            ("modelspec", .object(spec)),
            ("unclaimed_keys", .int(adapter.unclaimedKeys.count)),
        ]

        func text(_ v: JSONValue) -> String {
            switch v {
            case .int(let i): return String(i)
            case .string(let s): return s
            case .null: return "unknown"
            default: return "?"
            }
        }
        var lines = [
            "Method:      \(adapter.methodIDs.joined(separator: ", "))",
            "Format:      \(adapter.format)",
            "Modules:     \(adapter.modules.count) (\(typeCounts.map { "\($0.0) \($0.1)" }.joined(separator: ", ")))",
            "Rank:        \(text(rankValue))",
            "Alpha:       \(text(alphaValue))",
            "Base model:  \(adapter.baseModel?.rawValue ?? "unknown")",
        ]
        if !adapter.embeddings.isEmpty { lines.append("Embeddings:  \(adapter.embeddings.map(\.name).joined(separator: ", "))") }
        if !triggers.isEmpty { lines.append("Triggers:    \(InspectRenderer.printable(triggers.joined(separator: ", ")))") }
        lines += hashLines(hashes, stored: metadata.sshsModelHash)
        if let module = metadata.networkModule {
            lines.append("kohya:       \(module), dim \(metadata.networkDim ?? "?"), alpha \(metadata.networkAlpha ?? "?")"
                + (metadata.baseModelVersion.map { ", \($0)" } ?? ""))
        }
        if let architecture = metadata.modelSpec["architecture"] {
            lines.append("modelspec:   \(architecture)" + (metadata.modelSpec["title"].map { ", \"\(InspectRenderer.printable($0))\"" } ?? ""))
        }
        if !adapter.unclaimedKeys.isEmpty { lines.append("Unclaimed:   \(adapter.unclaimedKeys.count) keys no method understood") }
        return AdapterSection(jsonKey: "adapter", jsonValue: .object(members), title: "Adapter", tableLines: lines)
    }

    private static func hashesJSON(_ hashes: ModelHashes?, stored: String?) -> JSONValue {
        guard let hashes else { return .null }
        var members: [(String, JSONValue)] = [
            ("sha256", .string(hashes.sha256)),
            ("autov2", .string(hashes.autoV2)),
            ("addnet", hashes.addnet.map { .string($0) } ?? .null),
            ("addnet_short", hashes.addnetShort.map { .string($0) } ?? .null),
            ("legacy", .string(hashes.legacy)),
        ]
        if let stored {
            members.append(("sshs_model_hash", .string(stored)))
            members.append(("sshs_model_hash_matches", .bool(stored.lowercased() == hashes.addnet)))
        }
        return .object(members)
    }

    private static func hashLines(_ hashes: ModelHashes?, stored: String?) -> [String] {
        guard let hashes else { return ["Hashes:      could not be computed"] }
        var lines = ["SHA-256:     \(hashes.sha256)", "AutoV2:      \(hashes.autoV2)"]
        if let addnet = hashes.addnet { lines.append("Addnet hash: \(addnet) (A1111 Lora hash \(hashes.addnetShort!))") }
        lines.append("Legacy hash: \(hashes.legacy)")
        if let stored {
            lines.append("sshs hash:   " + (stored.lowercased() == hashes.addnet ? "matches the tensors"
                                                                            : "STALE: metadata says \(InspectRenderer.printable(stored))"))
        }
        return lines
    }
}
