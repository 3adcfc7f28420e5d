// Host-side driver of EarlyExitClassifier for tests/test_android_jvm.py: the module's Kotlin and JNI code on the
// desktop JVM, against libedgeexit built by targets/executorch.
//   java -Djava.library.path=DIR -cp app.jar:/usr/share/java/kotlin-stdlib.jar MainKt BUNDLE INPUT.f32 N
//   ... MainKt BUNDLE --verify
// Prints one JSON line (predictions, exits, logits, shapes, per-segment ms; or with --verify the self-check's
// per-method results, exit status 1 when it fails); on EdgeExitException prints its message to stderr and exits 1.
import dev.edgeexit.EarlyExitClassifier
import dev.edgeexit.EdgeExitException
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.system.exitProcess

fun jsonString(text: String): String =
    "\"" + text.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n") + "\""

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

fun main(args: Array<String>) {
    if (args.size == 2 && args[1] == "--verify") {
        verifyMain(args[0])
    }
    if (args.size != 3) {
        System.err.println("usage: MainKt BUNDLE INPUT.f32 N | MainKt BUNDLE --verify")
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
