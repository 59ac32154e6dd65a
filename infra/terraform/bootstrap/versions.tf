terraform {
  required_version = ">= 1.6"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # Local state: this configuration makes the bucket the other state lives in. Keep terraform.tfstate safe (or
  # migrate it into the bucket afterwards: docs/deployment.md, "Bootstrap the state").
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, { Project = "eventfleet", ManagedBy = "terraform", Component = "terraform-state" })
  }
}
