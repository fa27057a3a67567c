/** Throwaway X.509 certificates for TLS tests, made with the openssl command line. */
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function openssl(args: readonly string[], cwd: string): void {
  const result = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (result.error) throw new Error(`openssl could not run: ${result.error.message} (install the openssl package)`);
  if (result.status !== 0) throw new Error(`openssl ${args.join(" ")} failed:\n${result.stderr}`);
}

/** A certificate authority in a directory of its own. */
export class TestCa {
  private serial = 1;

  private constructor(
    readonly dir: string,
    readonly name: string,
  ) {}

  /** Makes a new CA (EC P-256, valid one day). */
  static create(name: string): TestCa {
    const dir = mkdtempSync(join(tmpdir(), `greyfleet-ca-${name}-`));
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], dir);
    openssl(["req", "-x509", "-new", "-key", "ca.key", "-days", "1", "-subj", `/CN=${name}`, "-out", "ca.pem"], dir);
    return new TestCa(dir, name);
  }

  /** The CA certificate's path. */
  get certFile(): string {
    return join(this.dir, "ca.pem");
  }

  /** Issues a certificate for `cn` with DNS/IP alternative names; returns the PEM paths. */
  issue(cn: string, altNames: readonly string[] = [], file = cn): { certFile: string; keyFile: string } {
    const key = `${file}.key`;
    const csr = `${file}.csr`;
    const ext = `${file}.ext`;
    openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], this.dir);
    openssl(["req", "-new", "-key", key, "-subj", `/CN=${cn}`, "-out", csr], this.dir);
    writeFileSync(
      join(this.dir, ext),
      [
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature",
        "extendedKeyUsage=serverAuth,clientAuth",
        ...(altNames.length > 0 ? [`subjectAltName=${altNames.join(",")}`] : []),
        "",
      ].join("\n"),
    );
    openssl(
      ["x509", "-req", "-in", csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", String(this.serial++)].concat([
        "-days",
        "1",
        "-extfile",
        ext,
        "-out",
        `${file}.pem`,
      ]),
      this.dir,
    );
    return { certFile: join(this.dir, `${file}.pem`), keyFile: join(this.dir, key) };
  }
}
