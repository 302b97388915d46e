import Tensor

/// The keys of one module that a method takes from a file.
public struct ModuleClaim: Sendable, Equatable {
    /// The module's name as written in the file (prefix shared by its keys).
    public let module: String
    /// Every key of the file that belongs to this module.
    public let keys: [String]
    public init(module: String, keys: [String]) {
        self.module = module
        self.keys = keys
    }
}

/// An adapter method: LoRA, LoHa, Textual Inversion, a plugin's type, ….
///
/// A method recognises its modules from a file's keys (and metadata) and loads them.
/// The registry asks every method, so a file that mixes module types (a LyCORIS file with
/// LoRA and LoHa modules) is split per module.
public protocol AdapterMethod: AnyObject {
    /// Stable identifier ("lora", "loha", "textual-inversion", "vera", …).
    var id: String { get }
    /// One line for listings.
    var summary: String { get }
    /// Built in or from a plugin.
    var origin: MethodOrigin { get }
    /// The modules of this method among `keys`; keys it does not know are left out.
    func claim(keys: [String], metadata: [String: String]) -> [ModuleClaim]
    /// Loads the claimed modules of `source` into an adapter.
    func load(claims: [ModuleClaim], from source: TensorSource) throws -> Adapter
}

extension AdapterMethod {
    public var origin: MethodOrigin { .builtIn }
}
