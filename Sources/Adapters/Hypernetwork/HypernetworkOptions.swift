import Foundation

/// A hypernetwork's options, read as A1111's `Hypernetwork.load` reads them (same defaults),
/// from the file's metadata: the non-tensor entries of a `.pt` (rendered as text by the
/// pickle source) or the `__metadata__` of the safetensors form. Values may be Python-style
/// (`[1, 2, 1]`, `True`, `'relu'`, `None`) or JSON-style (`[1.0, 2.0, 1.0]`, `true`, `relu`).
public struct HypernetworkOptions: Equatable, Sendable {
    /// Width multipliers of the MLP's layers: `[1, 2, 1]` is width → 2·width → width.
    /// Default `[1, 2, 1]`.
    public var layerStructure: [Double]
    /// `activation_func`; nil (absent or `None`) and "linear" add no activation module.
    public var activation: String?
    /// `is_layer_norm`: a LayerNorm after every linear (and its activation). Default false.
    public var layerNorm: Bool
    /// Dropout probability after each layer (`dropout_structure`, index i + 1 after linear i),
    /// derived as A1111's `parse_dropout_structure` when the file has none. Only the layer
    /// indices depend on it: dropout is off at inference.
    public var dropoutStructure: [Double]
    /// `activate_output`: the activation also after the last linear. A1111's default when
    /// absent is true.
    public var activateOutput: Bool
    /// `weight_initialization` (informative only).
    public var weightInitialization: String?

    /// Options from `metadata` (`file` names the file in errors).
    public init(metadata: [String: String], file: String) throws {
        func value(_ key: String) -> String? { Self.plainValue(metadata[key]) }
        func bool(_ key: String, default fallback: Bool) throws -> Bool {
            guard let text = value(key) else { return fallback }
            switch text.lowercased() {
            case "true", "1", "yes": return true
            case "false", "0", "no": return false
            default: throw HypernetworkError(file: file, key: key, rule: .badOption(value: text, expected: "True or False"))
            }
        }
        func numbers(_ key: String) throws -> [Double]? {
            guard let text = value(key) else { return nil }
            guard let list = Self.numberList(text) else {
                throw HypernetworkError(file: file, key: key, rule: .badOption(value: text, expected: "a list of numbers"))
            }
            return list
        }

        layerStructure = try numbers("layer_structure") ?? [1, 2, 1]
        guard layerStructure.count >= 2, layerStructure.first == 1, layerStructure.last == 1 else {
            throw HypernetworkError(file: file, key: "layer_structure", rule: .badLayerStructure(layerStructure))
        }
        activation = value("activation_func")
        layerNorm = try bool("is_layer_norm", default: false)
        activateOutput = try bool("activate_output", default: true)
        weightInitialization = value("weight_initialization")
        if let stored = try numbers("dropout_structure") {
            dropoutStructure = stored
        } else {
            // A1111: use_dropout = any(dropout_structure) if given, else the file's use_dropout.
            let useDropout = try bool("use_dropout", default: false)
            let lastLayerDropout = try bool("last_layer_dropout", default: false)
            dropoutStructure = Self.parseDropoutStructure(count: layerStructure.count, useDropout: useDropout,
                                                          lastLayerDropout: lastLayerDropout)
        }
    }

    /// A1111's `parse_dropout_structure`: none without dropout; otherwise 0, then 0.3 for every
    /// hidden layer but the last, then 0.3 or 0 for the last hidden layer, then 0.
    static func parseDropoutStructure(count: Int, useDropout: Bool, lastLayerDropout: Bool) -> [Double] {
        guard useDropout else { return [Double](repeating: 0, count: count) }
        return [0] + [Double](repeating: 0.3, count: max(count - 3, 0)) + [lastLayerDropout ? 0.3 : 0] + [0]
    }

    /// `text` without surrounding quotes; nil for absent, empty or `None`/`null`.
    static func plainValue(_ text: String?) -> String? {
        guard var s = text?.trimmingCharacters(in: .whitespaces), !s.isEmpty, s != "None", s != "null" else { return nil }
        if s.count >= 2, let first = s.first, first == s.last, first == "'" || first == "\"" {
            s = String(s.dropFirst().dropLast())
        }
        return s
    }

    /// `[1, 2.5, 1]`, `(1, 2, 1)` or `1,2,1` as numbers; nil when any element is not one.
    static func numberList(_ text: String) -> [Double]? {
        var s = Substring(text.trimmingCharacters(in: .whitespaces))
        if let first = s.first, let last = s.last, (first == "[" && last == "]") || (first == "(" && last == ")") {
            s = s.dropFirst().dropLast()
        }
        let parts = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        let values = parts.compactMap(Double.init)
        return values.count == parts.count && !values.isEmpty ? values : nil
    }
}
