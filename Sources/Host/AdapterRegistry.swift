import Tensor

/// Errors in telling which method a file belongs to.
public enum DetectionError: Error, CustomStringConvertible, Equatable {
    /// No method accepted any key of the file.
    case unknownFile(path: String, sampleKeys: [String], keyCount: Int)
    /// Two methods claimed the same key.
    case ambiguous(path: String, key: String, methods: [String])
    /// A method with this id is already registered.
    case duplicateMethod(id: String, existing: String, new: String)

    public var description: String {
        switch self {
        case let .unknownFile(path, sample, count):
            let more = count > sample.count ? " (and \(count - sample.count) more)" : ""
            return "\(path): no adapter method accepts its keys: \(sample.joined(separator: ", "))\(more)"
        case let .ambiguous(path, key, methods):
            return "\(path): key '\(key)' is claimed by several methods (\(methods.joined(separator: ", ")))"
        case let .duplicateMethod(id, existing, new):
            return "method id '\(id)' from \(new) is already registered (\(existing))"
        }
    }
}

/// What detection found in a file: the methods that take part, with their modules, and the
/// keys nobody took.
public struct Detection {
    public let path: String
    public let parts: [(method: any AdapterMethod, claims: [ModuleClaim])]
    public let unclaimedKeys: [String]
    /// Method ids, in registry order.
    public var methodIDs: [String] { parts.map { $0.method.id } }
}

/// The string-keyed registry of adapter methods: built-ins registered by the composition
/// root at start, plugins added at run time.
public final class AdapterRegistry {
    public private(set) var methods: [any AdapterMethod] = []

    public init() {}

    /// Adds a method; its id must be new.
    public func register(_ method: any AdapterMethod) throws {
        if let existing = methods.first(where: { $0.id == method.id }) {
            throw DetectionError.duplicateMethod(id: method.id, existing: existing.origin.description,
                                                 new: method.origin.description)
        }
        methods.append(method)
    }

    /// The method with this id.
    public func method(id: String) -> (any AdapterMethod)? { methods.first { $0.id == id } }

    /// Asks every method which keys of `source` it takes. One method per module; a key
    /// claimed twice is an error; a file of which nothing is claimed is an error naming keys.
    public func detect(_ source: TensorSource) throws -> Detection {
        let keys = source.keys
        var owner: [String: String] = [:]
        var parts: [(method: any AdapterMethod, claims: [ModuleClaim])] = []
        for method in methods {
            let claims = method.claim(keys: keys, metadata: source.metadata)
            if claims.isEmpty { continue }
            for claim in claims {
                for key in claim.keys {
                    if let other = owner[key], other != method.id {
                        throw DetectionError.ambiguous(path: source.path, key: key, methods: [other, method.id])
                    }
                    owner[key] = method.id
                }
            }
            parts.append((method, claims))
        }
        let unclaimed = keys.filter { owner[$0] == nil }
        if parts.isEmpty {
            throw DetectionError.unknownFile(path: source.path, sampleKeys: Array(keys.prefix(5)),
                                             keyCount: keys.count)
        }
        return Detection(path: source.path, parts: parts, unclaimedKeys: unclaimed)
    }

    /// Detects and loads `source`. Mixed files become one adapter with every method's modules.
    public func load(_ source: TensorSource) throws -> Adapter {
        let detection = try detect(source)
        let loaded = try detection.parts.map { try $0.method.load(claims: $0.claims, from: source) }
        let adapter: Adapter
        if loaded.count == 1 {
            adapter = loaded[0]
        } else {
            let families = Set(loaded.compactMap(\.baseModel))
            adapter = Adapter(path: source.path, methodIDs: loaded.flatMap(\.methodIDs),
                       format: loaded[0].format, baseModel: families.count == 1 ? families.first : nil,
                       metadata: source.metadata, modules: loaded.flatMap(\.modules),
                       embeddings: loaded.flatMap(\.embeddings),
                       contextTransforms: loaded.flatMap(\.contextTransforms),
                       requiredBaseHash: loaded.lazy.compactMap(\.requiredBaseHash).first)
        }
        adapter.unclaimedKeys = detection.unclaimedKeys
        return adapter
    }
}
