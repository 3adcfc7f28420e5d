// Host-side driver of EarlyExitClassifier for tests/test_android_jvm.py: the module's Kotlin and JNI code on the
// desktop JVM, against libedgeexit built by executorch.
//   java -Djava.library.path=DIR -cp app.jar:/usr/share/java/kotlin-stdlib.jar MainKt BUNDLE INPUT.f32 N
//   ... MainKt BUNDLE --verify
//   ... MainKt BUNDLE --image IMAGE.rgb WIDTH HEIGHT rgb|argb
//   ... MainKt --preprocess IMAGE.rgb WIDTH HEIGHT C H W RESIZE MEAN,... STD,...
// Prints one JSON line (predictions, exits, logits, shapes, per-segment ms; or with --verify the self-check's
// per-method results, exit status 1 when it fails; with --image the image's class name, index and exit and the
// input it was given; with --preprocess the input ImageInput makes of the image); on EdgeExitException prints its
// message to stderr and exits 1. IMAGE.rgb: raw 8-bit RGB, row by row; argb packs it into Bitmap-style ints.
import dev.edgeexit.EarlyExitClassifier
import dev.edgeexit.EdgeExitException
import dev.edgeexit.ImageInput
import dev.edgeexit.ImageSpec
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.system.exitProcess

// ASCII JSON: every character outside printable ASCII as \uXXXX, whatever the JVM's output encoding is
fun jsonString(text: String): String = "\"" + text.map { ch ->
    when {
        ch == '"' || ch == '\\' -> "\\$ch"
        ch.toInt() < 0x20 || ch.toInt() > 0x7e -> "\\u" + Integer.toHexString(ch.toInt()).padStart(4, '0')
        else -> ch.toString()
    }
}.joinToString("") + "\""

fun verifyMain(bundle: String) {
    val v = try {
        EarlyExitClassifier(bundle).use { it.verify() }
    } catch (e: EdgeExitException) {
        System.err.println("EdgeExitException: ${e.message}")
        exitProcess(1)
    }
    val methods = v.methods.joinToString(", ") { m ->
        "{\"method\": ${jsonString(m.method)}, \"cases\": ${m.cases}, \"passed\": ${m.passed}, " +
            "\"max_abs_error\": ${m.maxAbsError}, \"max_error\": ${m.maxError}, \"detail\": ${jsonString(m.detail)}}"
    }
    println("{\"passed\": ${v.passed}, \"tolerance\": ${v.tolerance}, \"methods\": [$methods]}")
    exitProcess(if (v.passed) 0 else 1)
}

fun argbOf(rgb: ByteArray): IntArray = IntArray(rgb.size / 3) { i ->
    // a varying alpha, which must not change the answer (PIL drops it too)
    ((i * 37) and 0xFF) shl 24 or ((rgb[3 * i].toInt() and 0xFF) shl 16) or
        ((rgb[3 * i + 1].toInt() and 0xFF) shl 8) or (rgb[3 * i + 2].toInt() and 0xFF)
}

fun imageMain(bundle: String, image: String, width: Int, height: Int, format: String) {
    val rgb = File(image).readBytes()
    try {
        EarlyExitClassifier(bundle).use { c ->
            val x = if (format == "argb") ImageInput.fromArgb(argbOf(rgb), width, height, c.imageSpec)
                    else ImageInput.fromRgb(rgb, width, height, c.imageSpec)
            val p = if (format == "argb") c.classifyArgb(argbOf(rgb), width, height) else c.classifyRgb(rgb, width, height)
            println("{\"class_name\": ${jsonString(p.className)}, \"class_index\": ${p.classIndex}, \"exit\": ${p.exit}, " +
                "\"class_names\": [${c.classNames.joinToString(", ") { jsonString(it) }}], " +
                "\"resize\": ${jsonString(c.imageSpec.resize)}, \"input\": [${x.joinToString(", ")}]}")
        }
    } catch (e: EdgeExitException) {
        System.err.println("EdgeExitException: ${e.message}")
        exitProcess(1)
    }
    exitProcess(0)
}

fun preprocessMain(args: Array<String>) {
    val floats = { s: String -> s.split(",").map { it.toFloat() }.toFloatArray() }
    val spec = ImageSpec(args[4].toInt(), args[5].toInt(), args[6].toInt(), floats(args[8]), floats(args[9]), args[7])
    val x = ImageInput.fromRgb(File(args[1]).readBytes(), args[2].toInt(), args[3].toInt(), spec)
    println("{\"input\": [${x.joinToString(", ")}]}")
    exitProcess(0)
}

fun main(args: Array<String>) {
    if (args.size == 2 && args[1] == "--verify") {
        verifyMain(args[0])
    }
    if (args.size == 6 && args[1] == "--image") {
        imageMain(args[0], args[2], args[3].toInt(), args[4].toInt(), args[5])
    }
    if (args.size == 10 && args[0] == "--preprocess") {
        preprocessMain(args)
    }
    if (args.size != 3) {
        System.err.println("usage: MainKt BUNDLE INPUT.f32 N | MainKt BUNDLE --verify | " +
            "MainKt BUNDLE --image IMAGE.rgb W H rgb|argb | MainKt --preprocess IMAGE.rgb W H C H W RESIZE MEAN STD")
        exitProcess(2)
    }
    val n = args[2].toInt()
    val bytes = File(args[1]).readBytes()
    val pixels = FloatArray(bytes.size / 4)
    ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(pixels)
    try {
        EarlyExitClassifier(args[0]).use { classifier ->
            val r = classifier.classify(pixels, n)
            println("{\"predictions\": [${r.predictions.joinToString(", ")}], " +
                "\"exits\": [${r.exits.joinToString(", ")}], " +
                "\"logits\": [${r.logits.joinToString(", ")}], " +
                "\"num_classes\": ${classifier.numClasses}, \"num_exits\": ${classifier.numExits}, " +
                "\"input_shape\": [${classifier.inputShape.joinToString(", ")}], " +
                "\"segment_ms\": [${classifier.segmentMs().joinToString(", ")}]}")
        }
    } catch (e: EdgeExitException) {
        System.err.println("EdgeExitException: ${e.message}")
        exitProcess(1)
    }
}
