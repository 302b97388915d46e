import Foundation
import SafeTensors
import Tensor
import Testing
@testable import Host

/// A temporary folder tree for one test, removed at the end.
final class TemporaryTree {
    let root: String

    init() throws {
        root = FileManager.default.temporaryDirectory
            .appendingPathComponent("adapterhost-models-\(getpid())-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func path(_ relative: String) -> String { (root as NSString).appendingPathComponent(relative) }

    /// Creates `relative` (and its folders) holding `contents`.
    func file(_ relative: String, contents: String = "x") throws {
        let full = path(relative)
        try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try Data(contents.utf8).write(to: URL(fileURLWithPath: full))
    }

    func folder(_ relative: String) throws {
        try FileManager.default.createDirectory(atPath: path(relative), withIntermediateDirectories: true)
    }

    /// `file.path` relative to the tree's root.
    func relative(_ file: ModelFile) -> String { String(file.path.dropFirst(root.count + 1)) }
}

@Suite("Models directory")
struct ModelsDirectoryTests {
    @Test("LoRA and hypernetwork listings follow A1111's order, and the last of a name wins")
    func a1111Order() throws {
        let fixture = try A1111PromptFixture.load().tree
        let tree = try TemporaryTree()
        for file in fixture.files { try tree.file(file) }
        let models = try ModelsDirectory(root: tree.root)

        #expect(models.files(.lora).map(tree.relative) == fixture.lora_listing)
        #expect(fixture.lora_names.count == 15)
        for (name, want) in fixture.lora_names {
            #expect(tree.relative(try models.resolve(name, as: .lora).file) == want, "\(name)")
        }
        let dup = try models.resolve("dup", as: .lora)
        #expect(dup.rule == .name)
        #expect(dup.shadowed.map(tree.relative) == ["Lora/dup.pt", "Lora/dup.safetensors", "Lora/sub2/inner/dup.ckpt"])

        #expect(models.files(.hypernetwork).map(tree.relative) == fixture.hypernet_listing)
        for (name, want) in fixture.hypernet_names {
            #expect(tree.relative(try models.resolve(name, as: .hypernetwork).file) == want, "\(name)")
        }
        #expect(throws: ModelsDirectoryError.self) { try models.resolve("None", as: .hypernetwork) }
        #expect(throws: ModelsDirectoryError.self) { try models.resolve("d", as: .hypernetwork) }   // in a hidden folder
    }

    @Test("natural sort matches A1111's natural_sort_key")
    func naturalSort() throws {
        let fixture = try A1111PromptFixture.load()
        let shuffled = fixture.natural_sort.reversed() + []
        #expect(shuffled.sorted(by: ModelsDirectory.naturalOrder) == fixture.natural_sort)
    }

    @Test("embeddings: webui root beside the models folder, and inside it; empty files skipped")
    func embeddings() throws {
        let tree = try TemporaryTree()
        try tree.folder("webui/models/Lora")
        try tree.file("webui/embeddings/style.pt")
        try tree.file("webui/embeddings/nested/deeper/face.safetensors")
        try tree.file("webui/embeddings/empty.pt", contents: "")
        try tree.file("webui/embeddings/readme.txt")
        try tree.file("webui/embeddings/preview.png")
        try tree.file("webui/models/embeddings/style.bin")
        try tree.file("webui/models/embeddings/other.PT")
        let models = try ModelsDirectory(root: tree.path("webui/models"))
        #expect(models.searchDirectories(for: .embedding) == [tree.path("webui/embeddings"), tree.path("webui/models/embeddings")])
        #expect(models.files(.embedding).map(tree.relative) == [
            "webui/embeddings/style.pt", "webui/embeddings/nested/deeper/face.safetensors",
            "webui/models/embeddings/other.PT", "webui/models/embeddings/style.bin",
        ])
        // One file per name, the last one of a name.
        #expect(models.embeddings().map(tree.relative) == [
            "webui/embeddings/nested/deeper/face.safetensors", "webui/models/embeddings/other.PT",
            "webui/models/embeddings/style.bin",
        ])
        // An explicit folder replaces both.
        try tree.file("mine/only.pt")
        let explicit = try ModelsDirectory(root: tree.path("webui/models"), embeddingsDirectory: tree.path("mine"))
        #expect(explicit.embeddings().map(\.name) == ["only"])
    }

    @Test("folder names match case-insensitively; names compare exactly with close suggestions")
    func caseRules() throws {
        let tree = try TemporaryTree()
        for name in ["catStyle", "catStyle_v1", "dogStyle", "cat"] { try tree.file("m/lora/\(name).safetensors") }
        try tree.file("m/lora/Upper.SafeTensors")
        try tree.file("m/STABLE-DIFFUSION/base.safetensors")
        let models = try ModelsDirectory(root: tree.path("m"))
        #expect(models.searchDirectories(for: .lora) == [tree.path("m/lora")])
        #expect(try models.resolve("Upper", as: .lora).file.path == tree.path("m/lora/Upper.SafeTensors"))
        #expect(try models.resolve("base", as: .checkpoint).file.name == "base")

        func notFound(_ name: String) -> ModelsDirectoryError? {
            do { _ = try models.resolve(name, as: .lora); return nil } catch { return error as? ModelsDirectoryError }
        }
        #expect(notFound("catstyle_v2") == .notFound(kind: .lora, name: "catstyle_v2", searched: [tree.path("m/lora")],
                                                      suggestions: ["catStyle_v1", "catStyle", "dogStyle"]))
        #expect(notFound("CATSTYLE") == .notFound(kind: .lora, name: "CATSTYLE", searched: [tree.path("m/lora")],
                                                   suggestions: ["catStyle", "catStyle_v1", "dogStyle"]))
        #expect(notFound("upper").map { "\($0)" } ==
                "no LoRA named \"upper\" in \(tree.path("m/lora")); closest: \"Upper\", \"cat\", \"catStyle\"")
        #expect(ModelsDirectory.editDistance(Array("kitten".unicodeScalars), Array("sitting".unicodeScalars)) == 3)
        #expect(ModelsDirectory.editDistance([], Array("abc".unicodeScalars)) == 3)
    }

    @Test("explicit LoRA folder replaces Lora but LyCORIS is still searched; missing folders are errors")
    func overrides() throws {
        let tree = try TemporaryTree()
        try tree.file("m/Lora/a.safetensors")
        try tree.file("m/LyCORIS/b.safetensors")
        try tree.file("elsewhere/c.pt")
        let models = try ModelsDirectory(root: tree.path("m"), loraDirectory: tree.path("elsewhere"))
        #expect(models.searchDirectories(for: .lora) == [tree.path("elsewhere"), tree.path("m/LyCORIS")])
        #expect(models.files(.lora).map(\.name) == ["c", "b"])
        #expect(throws: ModelsDirectoryError.self) { try models.resolve("a", as: .lora) }

        #expect(throws: ModelsDirectoryError.notADirectory(path: tree.path("nope"), option: "--models-dir")) {
            try ModelsDirectory(root: tree.path("nope"))
        }
        #expect(throws: ModelsDirectoryError.notADirectory(path: tree.path("m/Lora/a.safetensors"), option: "--lora-dir")) {
            try ModelsDirectory(root: nil, loraDirectory: tree.path("m/Lora/a.safetensors"))
        }
        let noHypernets = try ModelsDirectory(root: tree.path("m"))
        #expect(throws: ModelsDirectoryError.noFolder(kind: .hypernetwork, tried: [tree.path("m/hypernetworks")])) {
            try noHypernets.resolve("h", as: .hypernetwork)
        }
    }

    @Test("checkpoints: by name, by path in the folder, by shortest containing path; VAEs and diffusers folders")
    func checkpoints() throws {
        let tree = try TemporaryTree()
        try tree.file("m/Stable-diffusion/sd15.safetensors")
        try tree.file("m/Stable-diffusion/sd15.vae.safetensors")
        try tree.file("m/Stable-diffusion/xl/juggernaut_v9.safetensors")
        try tree.file("m/Stable-diffusion/xl/juggernaut_v9_inpainting.ckpt")
        try tree.file("m/Stable-diffusion/tiny-diffusers/model_index.json")
        try tree.file("m/Stable-diffusion/tiny-diffusers/unet/diffusion_pytorch_model.safetensors")
        let models = try ModelsDirectory(root: tree.path("m"))
        let files = models.files(.checkpoint)
        #expect(files.map(\.relativePath) == ["sd15.safetensors", "tiny-diffusers", "xl/juggernaut_v9.safetensors",
                                              "xl/juggernaut_v9_inpainting.ckpt"])
        #expect(files.map(\.isFolder) == [false, true, false, false])
        #expect(try models.resolve("tiny-diffusers", as: .checkpoint).file.isFolder)
        #expect(try models.resolve("xl/juggernaut_v9", as: .checkpoint).rule == .relativePath)
        #expect(try models.resolve("xl/juggernaut_v9.safetensors", as: .checkpoint).file.name == "juggernaut_v9")
        let partial = try models.resolve("jugger", as: .checkpoint)
        #expect(partial.rule == .partialPath)
        #expect(partial.file.relativePath == "xl/juggernaut_v9.safetensors")
        #expect(partial.shadowed.map(\.name) == ["juggernaut_v9_inpainting"])
    }

    @Test("a LoRA also answers to its ss_output_name alias, after file names")
    func loraAlias() throws {
        let tree = try TemporaryTree()
        try tree.folder("m/Lora")
        let tensor = Tensor(zeros: [1], dtype: .f32)
        try SafeTensorsWriter.write(["w": tensor], metadata: ["ss_output_name": "prettyName"], to: tree.path("m/Lora/file_v3.safetensors"))
        try SafeTensorsWriter.write(["w": tensor], metadata: ["ss_output_name": "taken"], to: tree.path("m/Lora/other.safetensors"))
        try tree.file("m/Lora/taken.pt")
        let models = try ModelsDirectory(root: tree.path("m"))
        let byAlias = try models.resolve("prettyName", as: .lora)
        #expect(byAlias.rule == .alias)
        #expect(byAlias.file.name == "file_v3")
        #expect(try models.resolve("taken", as: .lora).file.name == "taken")   // a file name first
        #expect(models.closestNames(to: "prettyname", kind: .lora) == ["prettyName", "taken", "other"])
    }
}
