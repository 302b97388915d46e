import Host
import Tensor

/// A tensor a network needs is absent or unusable.
public enum WeightLoaderError: Error, CustomStringConvertible, Equatable {
    /// No tensor for the diffusers-style key (`tried`: the model's key it maps to, if any).
    case missing(model: String, key: String, tried: String?)
    /// The tensor exists but its shape breaks the rule named.
    case badShape(model: String, key: String, shape: [Int], rule: String)
    /// The model lacks a part the network was asked to build from.
    case missingComponent(model: String, component: String)

    public var description: String {
        switch self {
        case let .missing(model, key, tried):
            return "\(model): no tensor '\(key)'" + (tried.map { " (looked for '\($0)')" } ?? "")
        case let .badShape(model, key, shape, rule):
            return "\(model): tensor '\(key)' has shape \(shape): \(rule)"
        case let .missingComponent(model, component):
            return "\(model): the model has no \(component) weights"
        }
    }
}

/// Finds a model's tensors by diffusers key (`unet.down_blocks.0.resnets.0.conv1.weight`),
/// whatever the checkpoint's own naming, through Host's key maps. Built once per model.
///
/// Diffusers-named models answer directly (a text-encoder key is also tried without its
/// `text_model.` level: transformers ≥ 5.6 saves it so). Single files (ldm/sgm keys) are
/// indexed once: every key is mapped to its diffusers key(s) with the checkpoint key map for
/// the layout the keys show (so tiny test models map like real ones), remembering the
/// transform between the two (1×1 conv ↔ linear reshape, fused q/k/v rows, transpose).
public final class WeightKeyResolver {
    /// The model resolved against.
    public let model: ModelWeights
    /// diffusers key → (model key, transform from the model tensor to the diffusers one).
    private let singleFile: [String: KeyConversion]

    public init(model: ModelWeights) {
        self.model = model
        guard model.naming == .singleFile else {
            singleFile = [:]
            return
        }
        let layout = ModelLayout(keys: model.keys, naming: model.naming, family: model.family)
        let map = CheckpointKeyMap(family: model.family, layout: layout)
        var entries: [String: KeyConversion] = [:]
        entries.reserveCapacity(model.keys.count + 64)
        for key in model.keys {
            for conversion in map.diffusersKeys(forSingleFile: key) where entries[conversion.key] == nil {
                entries[conversion.key] = KeyConversion(key: key, transform: conversion.transform)
            }
        }
        singleFile = entries
    }

    /// The model key and transform for a full diffusers key, or nil when the model lacks it.
    public func resolve(_ diffusersKey: String) -> KeyConversion? {
        switch model.naming {
        case .singleFile:
            return singleFile[diffusersKey]
        case .diffusers:
            if model.tensor(diffusersKey) != nil { return KeyConversion(key: diffusersKey, transform: .identity) }
            // transformers ≥ 5.6 text encoders: `text_encoder.encoder.…` without `text_model.`.
            if let range = diffusersKey.range(of: ".text_model.") {
                let flattened = diffusersKey.replacingCharacters(in: range, with: ".")
                if model.tensor(flattened) != nil { return KeyConversion(key: flattened, transform: .identity) }
            }
            return nil
        }
    }

    /// The tensor now stored for `conversion`, in its diffusers form (a view: zero-copy).
    func tensor(for conversion: KeyConversion, diffusersKey: String) throws -> Tensor {
        guard let stored = model.tensor(conversion.key) else {
            throw WeightLoaderError.missing(model: model.path, key: diffusersKey, tried: conversion.key)
        }
        if conversion.transform == .identity { return stored }
        return try CheckpointConversion.toDiffusers(stored, conversion.transform, path: model.path, key: conversion.key)
    }
}

/// A prefix-carrying view of a model's weights (candle's `VarBuilder` style): `child("conv1")`
/// descends a module path, `parameter("weight")` resolves `<prefix>.weight` as a diffusers key.
/// Networks are built from it without knowing how the checkpoint names its tensors.
public struct WeightLoader {
    public let resolver: WeightKeyResolver
    /// Diffusers key prefix, ending in "." (e.g. `unet.down_blocks.0.`), or empty.
    public let prefix: String

    /// The root of `component` (`unet.`, `vae.`, `text_encoder.`, `text_encoder_2.`).
    public init(model: ModelWeights, component: ModelPart) {
        self.init(resolver: WeightKeyResolver(model: model), component: component)
    }

    /// The root of `component`, sharing a resolver already built for the model.
    public init(resolver: WeightKeyResolver, component: ModelPart) {
        let prefix: String
        switch component {
        case .unet: prefix = "unet."
        case .vae: prefix = "vae."
        case .textEncoder(0): prefix = "text_encoder."
        case .textEncoder(let i): prefix = "text_encoder_\(i + 1)."
        }
        self.init(resolver: resolver, prefix: prefix)
    }

    /// A loader at an explicit diffusers key prefix.
    public init(resolver: WeightKeyResolver, prefix: String) {
        self.resolver = resolver
        self.prefix = prefix
    }

    /// The model the loader reads.
    public var model: ModelWeights { resolver.model }

    /// The loader one module level down (`name` may contain dots).
    public func child(_ name: String) -> WeightLoader { WeightLoader(resolver: resolver, prefix: prefix + name + ".") }

    /// The loader for list element `index` (`resnets` → `resnets.0`).
    public func child(_ name: String, _ index: Int) -> WeightLoader { child("\(name).\(index)") }

    /// The full diffusers key of `name` under this prefix.
    public func diffusersKey(_ name: String) -> String { prefix + name }

    /// True when the model has `<prefix><name>`.
    public func contains(_ name: String) -> Bool { resolver.resolve(prefix + name) != nil }

    /// How many consecutive list elements `<prefix><list>.<i>.<probe>` exist (from 0).
    public func count(_ list: String, probe: String) -> Int {
        var n = 0
        while contains("\(list).\(n).\(probe)") { n += 1 }
        return n
    }

    /// A handle on `<prefix><name>`; throws when the model lacks it.
    public func parameter(_ name: String) throws -> Parameter {
        let key = prefix + name
        guard let conversion = resolver.resolve(key) else {
            throw WeightLoaderError.missing(model: model.path, key: key, tried: nil)
        }
        let tensor = try resolver.tensor(for: conversion, diffusersKey: key)
        return Parameter(resolver: resolver, conversion: conversion, diffusersKey: key, shape: tensor.shape)
    }

    /// `parameter(name)`, or nil when the model lacks it.
    public func optionalParameter(_ name: String) throws -> Parameter? {
        contains(name) ? try parameter(name) : nil
    }
}

/// One tensor of the model, looked up again at every use: merged-mode patches (which swap
/// tensors inside `ModelWeights`) are seen at once, and nothing of the model is copied or
/// kept (F16/BF16 tensors are widened per use by the layer that reads them).
public struct Parameter {
    let resolver: WeightKeyResolver
    let conversion: KeyConversion
    /// The diffusers key (for messages).
    public let diffusersKey: String
    /// Shape in diffusers form (e.g. [O, I] for a single file's [O, I, 1, 1] VAE attention weight).
    public let shape: [Int]

    /// The model's own key: the key bypass patches and adapter plans use.
    public var modelKey: String { conversion.key }
    /// The shape the model stores (differs from `shape` for 1×1-conv ↔ linear transforms).
    public var storedShape: [Int] { resolver.model.tensor(conversion.key)?.shape ?? shape }

    /// The tensor now in the model, in diffusers form (a view; any dtype).
    public func current() throws -> Tensor {
        try resolver.tensor(for: conversion, diffusersKey: diffusersKey)
    }

    /// The values as F32 in a new array (for small vectors: biases, norm scales).
    public func floats() throws -> [Float] { try current().floats }

    /// Throws unless the diffusers-form shape satisfies `rule`.
    func require(_ valid: Bool, _ rule: String) throws {
        if !valid {
            throw WeightLoaderError.badShape(model: resolver.model.path, key: diffusersKey, shape: shape, rule: rule)
        }
    }
}
