'use strict';
// dcmjs-dimse (npm) as a foreign UPS SCU against `tdwii serve --mtls`, one association per
// step, TLS pinned to one version. Run by tests/test_dcmjs_peer.py:
//
//   node ups_tls_client.js PLAN.json
//
// PLAN: host, port, called/calling AE titles, tls ("TLSv1.2" or "TLSv1.3"), ca/cert/key (PEM
// paths), workitem (a Part 10 file of the UPS to create), uid, txn, patient_id, echoes (how
// many C-ECHO associations in a row at the end), timeout_ms (per association); with "ups":
// false, only the C-ECHO associations (against a peer without UPS, to compare).
//
// Prints one JSON object: {"version": dcmjs-dimse's version, "associations": [...]}, where
// each association has its name, the TLS version it negotiated, every response (status, data
// set flag, data set elements, error comment) and every event in order: "accepted",
// "released" (A-RELEASE-RP received), "aborted" (A-ABORT received), "rejected", "error: ..."
// (a networkError: socket errors such as read ECONNRESET, timeouts, PDUs it could not read),
// "socket end" (the peer's FIN), "closed", "timeout" (the association did not close in time).
// errors_after_release lists the errors seen after a completed A-RELEASE.

const fs = require('fs');
const dimse = require('dcmjs-dimse');

const { Client, Dataset } = dimse;
const { CEchoRequest, CFindRequest, NActionRequest, NCreateRequest, NGetRequest, NSetRequest } =
  dimse.requests;

const UPS_PUSH = '1.2.840.10008.5.1.4.34.6.1';
const UPS_PULL = '1.2.840.10008.5.1.4.34.6.3';

dimse.log.setLevel('silent');

const plan = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const security = {
  key: fs.readFileSync(plan.key),
  cert: fs.readFileSync(plan.cert),
  ca: fs.readFileSync(plan.ca),
  rejectUnauthorized: true,
  minVersion: plan.tls,
  maxVersion: plan.tls,
};

function plain(value) {
  // data set values as JSON can carry them (ArrayBuffers and typed arrays as byte counts)
  return JSON.parse(
    JSON.stringify(value, (key, v) => {
      if (v instanceof ArrayBuffer) return `<${v.byteLength} bytes>`;
      if (ArrayBuffer.isView(v)) return `<${v.byteLength} bytes>`;
      return v;
    })
  );
}

function associate(name, requests) {
  return new Promise((resolve) => {
    const result = {
      name,
      tls: null,
      responses: [],
      events: [],
      errors_after_release: [],
    };
    let released = false;
    let finished = false;
    const client = new Client();
    const finish = () => {
      if (!finished) {
        finished = true;
        clearTimeout(timer);
        resolve(result);
      }
    };
    const timer = setTimeout(() => {
      result.events.push('timeout');
      finish();
    }, plan.timeout_ms);

    for (const request of requests) {
      request.on('response', (response) => {
        const dataset = response.getDataset();
        result.responses.push({
          status: response.getStatus(),
          has_dataset: response.hasDataset(),
          dataset: dataset ? plain(dataset.getElements()) : null,
          error_comment: response.getErrorComment() || '',
        });
      });
      client.addRequest(request);
    }
    client.on('associationAccepted', () => {
      result.events.push('accepted');
      result.tls = client.network.socket.getProtocol();
    });
    client.on('associationRejected', (reject) => {
      result.events.push(`rejected ${JSON.stringify(reject)}`);
    });
    client.on('associationReleased', () => {
      released = true;
      result.events.push('released');
    });
    client.on('networkError', (error) => {
      result.events.push(`error: ${error.message}`);
      if (released) result.errors_after_release.push(error.message);
    });
    client.on('closed', () => {
      result.events.push('closed');
      // let any error already queued on the socket arrive first
      setImmediate(finish);
    });
    client.send(plan.host, plan.port, plan.calling, plan.called, {
      securityOptions: security,
      connectTimeout: plan.timeout_ms,
      associationTimeout: plan.timeout_ms,
      pduTimeout: plan.timeout_ms,
    });
    client.network.on('abort', (abort) => {
      result.events.push(`aborted ${JSON.stringify(abort)}`);
      if (released) result.errors_after_release.push('A-ABORT');
    });
    client.network.socket.on('end', () => result.events.push('socket end'));
  });
}

function workitem() {
  return Dataset.fromFile(plan.workitem);
}

async function main() {
  const steps = [];
  if (plan.ups !== false) upsSteps(steps);
  for (let i = 0; i < plan.echoes; i++) {
    steps.push(['C-ECHO', () => [new CEchoRequest()]]);
  }

  const associations = [];
  for (const [name, requests] of steps) {
    associations.push(await associate(name, requests()));
  }
  process.stdout.write(`${JSON.stringify({ version: dimse.version, associations })}\n`);
}

function upsSteps(steps) {
  steps.push(['C-ECHO', () => [new CEchoRequest()]]);
  steps.push([
    'N-CREATE',
    () => {
      const request = new NCreateRequest(UPS_PUSH, plan.uid);
      request.setDataset(workitem());
      return [request];
    },
  ]);
  steps.push([
    'C-FIND',
    () => {
      const request = new CFindRequest();
      request.setAffectedSopClassUid(UPS_PULL);
      request.setDataset(
        new Dataset({
          PatientID: plan.patient_id,
          SOPInstanceUID: '',
          ProcedureStepState: 'SCHEDULED',
          ProcedureStepLabel: '',
        })
      );
      return [request];
    },
  ]);
  steps.push(['N-GET', () => [new NGetRequest(UPS_PULL, plan.uid, ['ProcedureStepState'])]]);
  steps.push([
    'N-ACTION',
    () => {
      const request = new NActionRequest(UPS_PULL, plan.uid, 1);
      request.setDataset(
        new Dataset({ ProcedureStepState: 'IN PROGRESS', TransactionUID: plan.txn })
      );
      return [request];
    },
  ]);
  steps.push([
    'N-SET',
    () => {
      const request = new NSetRequest(UPS_PULL, plan.uid);
      request.setDataset(
        new Dataset({
          TransactionUID: plan.txn,
          ProcedureStepProgressInformationSequence: [
            { ProcedureStepProgress: 50, ProcedureStepProgressDescription: 'beam 1 of 2' },
          ],
        })
      );
      return [request];
    },
  ]);
  steps.push(['N-GET', () => [new NGetRequest(UPS_PULL, plan.uid, ['ProcedureStepState'])]]);
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
