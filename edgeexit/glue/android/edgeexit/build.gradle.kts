// The edgeexit Android library module: EarlyExitClassifier (Kotlin) over libedgeexit_jni + libedgeexit (C++,
// ExecuTorch with XNNPACK). Drop this directory into an app (include(":edgeexit") in settings.gradle.kts) and set,
// in gradle.properties or with -P:
//   edgeexit.executorchDir   <ExecuTorch android install>/lib/cmake/ExecuTorch   (see android/README.md)
//   edgeexit.nlohmannJsonDir <prefix>/share/cmake/nlohmann_json
//   edgeexit.valijsonDir     <prefix>/lib/cmake/valijson
//   edgeexit.bundledProgramSchemaDir  <executorch source>/devtools/bundled_program/schema (the test vectors' schema)
//   edgeexit.programSchemaDir  <executorch source>/schema (program.fbs: the .pte check before ExecuTorch reads it)
//   edgeexit.flatc                    a host flatc of the same release as
//   edgeexit.flatbuffersInclude       <executorch source>/third-party/flatbuffers/include
// Not built on the machines that develop edgeexit (no Android SDK there); tests/test_android_jvm.py runs the same
// Kotlin and JNI code on the host JVM.
plugins {
    id("com.android.library")
    id("org.jetbrains.kotlin.android")
}

fun required(name: String): String =
    providers.gradleProperty(name).orNull ?: error("set -P$name=... (see android/README.md)")

android {
    namespace = "dev.edgeexit"
    compileSdk = 34

    defaultConfig {
        minSdk = 26
        ndk { abiFilters += listOf("arm64-v8a") }  // add the ABIs your ExecuTorch install was built for
        externalNativeBuild {
            cmake {
                arguments += listOf(
                    "-Dexecutorch_DIR=${required("edgeexit.executorchDir")}",
                    "-Dnlohmann_json_DIR=${required("edgeexit.nlohmannJsonDir")}",
                    "-Dvalijson_DIR=${required("edgeexit.valijsonDir")}",
                    "-DEDGEEXIT_BUNDLED_PROGRAM_SCHEMA_DIR=${required("edgeexit.bundledProgramSchemaDir")}",
                    "-DEDGEEXIT_PROGRAM_SCHEMA_DIR=${required("edgeexit.programSchemaDir")}",
                    "-DEDGEEXIT_FLATC=${required("edgeexit.flatc")}",
                    "-DEDGEEXIT_FLATBUFFERS_INCLUDE=${required("edgeexit.flatbuffersInclude")}",
                    "-DANDROID_STL=c++_shared"
                )
                cppFlags += listOf("-fexceptions", "-frtti")  // nlohmann/json and valijson throw
            }
        }
    }

    externalNativeBuild {
        cmake {
            path = file("src/main/cpp/CMakeLists.txt")
            version = providers.gradleProperty("edgeexit.cmakeVersion").getOrElse("3.31.6")  // >= 3.28
        }
    }

    sourceSets["main"].java.srcDirs("src/main/kotlin")

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_1_8
        targetCompatibility = JavaVersion.VERSION_1_8
    }
    kotlinOptions {
        jvmTarget = "1.8"
    }
}
