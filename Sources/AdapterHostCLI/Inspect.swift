import ArgumentParser

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a safetensors file's tensors and metadata.")
    @Argument(help: "The file to inspect.") var file: String
    @Flag(help: "Print JSON.") var json = false
    func run() throws { throw ValidationError("not yet implemented") }
}
